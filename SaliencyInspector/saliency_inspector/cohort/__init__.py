"""Cohorts: batch runs over a manifest (local processes or Ray actors) and cohort statistics."""
