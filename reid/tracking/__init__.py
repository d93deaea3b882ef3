"""track.py's work: a run's re-ID export inside BoxMOT's trackers over a MOTChallenge sequence, the results file,
a picture of the tracks and TrackEval's metrics. BoxMOT and TrackEval are imported only when used.
"""
