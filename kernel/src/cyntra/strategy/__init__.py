"""The decision engine: strategies behind one interface, the policy clamp, decision records."""
