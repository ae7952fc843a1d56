"""The routing page's files (served by apis/ui.py)."""
