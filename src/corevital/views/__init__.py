"""Views: what a person sees of stored runs (terminal tables, comparisons, exports, the HTML report).

Shared by the CLI and the server, so a view added for one is there for the other. Never imports
torch; reads reports and index rows only.
"""
