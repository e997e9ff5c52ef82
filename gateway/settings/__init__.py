"""gateway/settings"""
