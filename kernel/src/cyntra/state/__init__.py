"""Work items: the Issue model, the beads store and the issue graph."""
