"""vislab.evaluate"""
