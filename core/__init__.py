"""Building blocks the apps share that belong to none of them: the JSON API's edge (typed
errors, a bounded body parser, JSON error pages) and default periodic schedules."""
