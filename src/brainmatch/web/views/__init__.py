"""Views of the web service, by user role."""
