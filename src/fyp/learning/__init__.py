"""The learning role apart from serving: the learner process (:mod:`.learner`), how the
serving process reaches it (:mod:`.link`) and keeps it running (:mod:`.supervisor`).
What crosses between them is the model channel (:mod:`fyp.model.channel`)."""
