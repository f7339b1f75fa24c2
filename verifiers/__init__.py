"""Verifiers: exact environment checkers (ground truth) and learned process reward models (PRMs).

Contract: environment verifiers never raise on model output (malformed is simply wrong); PRM verifiers
return one score in [0, 1] per step, where higher means "this solution can still succeed".
"""
