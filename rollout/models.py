"""Feature flags per environment, revisions, plans and audit: see DESIGN.md section 6."""
