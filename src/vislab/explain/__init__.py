"""vislab.explain"""
