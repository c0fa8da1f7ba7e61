"""vislab.data"""
