"""vislab.train"""
