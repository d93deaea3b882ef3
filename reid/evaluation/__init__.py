"""Evaluation: feature extraction and result files, CMC / mAP / mINP, k-reciprocal re-ranking, the protocols that
average trials, and the pictures and HTML page of the rankings.
"""
