"""Trust and safety: moderation states and labels, the eligibility policy per surface,
text matching for user mutes, report counting and creator strikes."""
