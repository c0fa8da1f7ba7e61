"""vislab.report"""
