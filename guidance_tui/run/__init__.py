"""Running a prompt script: in this process (record, plain run) or in a child
process the app follows (run).  No Textual here."""
