"""vislab.segment"""
