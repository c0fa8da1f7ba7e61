"""vislab.serve"""
