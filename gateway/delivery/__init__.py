"""gateway/delivery"""
