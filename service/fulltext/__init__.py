"""Full-text search over the transcript index: the query language (words, "phrases", prefix*) and its
SQL on each database (FTS5 on SQLite, tsvector on PostgreSQL). Used by the search API and by the
calls listing (``GET /v1/calls?q=``)."""
