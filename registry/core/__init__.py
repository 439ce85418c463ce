"""The record itself, pure Python: no Flask, no SQLAlchemy. The server and the site tools import
it; it imports neither."""
