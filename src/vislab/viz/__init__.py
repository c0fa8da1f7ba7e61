"""vislab.viz"""
