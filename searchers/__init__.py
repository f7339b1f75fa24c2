"""Search strategies (Best-of-N, PRM beam search, MCTS, sequential revision, auto) over a `PolicyEngine`
and a `StepVerifier`, under one per-request token budget. Arrives with the search issue.
"""
