"""Users as they tell us about themselves: profile (age band, language, region) and the
controls they set on their feed (mutes, topics, non-personalised mode, refresh)."""
