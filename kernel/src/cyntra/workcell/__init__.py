"""workcell"""
