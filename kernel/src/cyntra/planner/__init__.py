"""What the planner sees and chooses: the action space, planner inputs, run summaries."""
