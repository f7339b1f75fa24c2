"""Step-level Monte Carlo tree search: nodes are solution steps, the policy proposes them, the PRM (or a
rollout's outcome) values them, and PUCT decides where to look next.

Contract:
- Knobs: `iterations` (None: until the budget stops it), `leaves_per_iteration`, `children`, `c_puct`,
  `virtual_loss`, `evaluation` (prm | rollout | prm+rollout), `use_outcome`, `final` (value | visits).
- An iteration is llm-reasoners' four phases, one function each:
  select: from the root, descend by PUCT, Q + c_puct·P·√N(parent) / (1 + N(child)), to
    `leaves_per_iteration` distinct open leaves. A virtual loss along each chosen path sends the next
    descent elsewhere, so the engine always gets a batch. Finished leaves met on the way are only
    visited again (their value backed up, no engine call).
  expand: all chosen leaves in ONE engine call of `children` samples each; identical steps under one
    parent are merged; priors are the policy's step probabilities (a softmax of per-token log-probs).
    With rollout evaluation that call samples whole rollouts, and their first steps are the children,
    each already rolled out (the same distribution as a step, then a rollout from it, in one call).
  evaluate: ONE verifier call for every new node: the PRM is a value function, so an open node is worth
    its last step's score. With rollouts, the rollout's finished solution is graded ("prm+rollout"
    averages the two). A finished solution is graded as an
    answer: 1 or 0 by the environment verifier with `use_outcome` (where the task has one), else its
    aggregated PRM value, the number the final choice uses too.
  backup: each new node counts its own value as its first visit; the expanded leaf's path gets their
    prior-weighted mean (the leaf's value under the policy), and its virtual loss is removed.
- It stops after `iterations` ("done"), when every leaf has ended ("done"; "budget" where the budget cut
  one short), with `use_outcome` once a solution is verified correct ("done"), when the budget cannot
  pay for another iteration (estimated from the steps seen so far and `ctx.hints` before each one; the
  last one expands the best leaf with as many children as the rest pays for), or when an adapter
  raises `SearchStopped`.
- The default evaluation is "rollout": a rollout graded by the PRM's value of the whole solution. On
  tier-4 Countdown the PRM ranks finished solutions far better (AUROC 0.95) than steps (0.76 over
  every step), and at 16x rollouts raised MCTS's accuracy from 26% to 39% on 200 dev problems.
- The answer: with `use_outcome` a verified-correct solution first; then with final="value" the finished
  solution of highest aggregated PRM value, with "visits" the end of the most-visited path when it is a
  finished solution (else by value). Never below greedy (`never_below_greedy`): the greedy solution is
  drawn (and scored) first; a budget that then cannot pay for one whole path (a graded rollout; with
  "prm" evaluation a path scored step by step) gets the greedy solution, and otherwise it is a candidate
  and the answer where the PRM values it above the search's.
  Candidates are the finished solutions seen (tree nodes and rollouts); `tree` is the visited part of
  the tree (at most `TREE_LIMIT` nodes).
"""

from __future__ import annotations

import asyncio
import math
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, ClassVar, Literal

from pydantic import Field

from engines.base import Continuation
from engines.budget import Hold, SearchStopped, StopReason
from searchers.base import (
    COST_MARGIN,
    PartialSearchKnobs,
    SearchContext,
    SearchResult,
    Trace,
    best_by_value,
    first_step,
    never_below_greedy,
    result,
    score,
    stepwise_path_cost,
    value,
)

Evaluation = Literal["prm", "rollout", "prm+rollout"]
TREE_LIMIT = 256  # nodes reported in `SearchResult.tree`
MIN_TOKEN_LOGPROB = -1e4  # floor for a -inf log-prob, so such a step still gets a (negligible) prior


class MCTSKnobs(PartialSearchKnobs):
    # `default=` by keyword, so that type checkers see the defaults too (the constructor's arguments)
    iterations: int | None = Field(default=None, ge=1, le=100_000, description="None: until the budget")
    leaves_per_iteration: int = Field(default=4, ge=1, le=64, description="leaves expanded per iteration")
    children: int = Field(default=4, ge=1, le=64, description="steps sampled per expanded leaf")
    c_puct: float = Field(default=1.5, ge=0.0, le=100.0, description="weight of the prior (exploration)")
    virtual_loss: float = Field(default=1.0, ge=0.0, le=100.0, description="per path selected in a batch")
    evaluation: Evaluation = Field(default="rollout", description="step score, graded rollout, or their mean")
    use_outcome: bool = Field(default=False, description="grade answers by the task's checker, if any")
    final: Literal["value", "visits"] = Field(default="value", description="best value or most visits")


@dataclass(eq=False)  # compared and hashed by identity: equal fields are still two places in the tree
class Node:
    trace: Trace
    step: str = ""  # the text of the step this node adds (empty at the root)
    prior: float = 1.0
    parent: Node | None = None
    children: list[Node] = field(default_factory=list)
    visits: int = 0
    total: float = 0.0
    own_value: float | None = None  # its own evaluation, once made (before any backup)
    rollout: Trace | None = None  # the solution it was rolled out to, with rollout evaluation

    @property
    def terminal(self) -> bool:
        return self.trace.ended

    @property
    def mean(self) -> float | None:
        return self.total / self.visits if self.visits else None

    def walk(self) -> Iterator[Node]:
        yield self
        for child in self.children:
            yield from child.walk()


NodePath = list[Node]  # root first, leaf last


class MCTS:
    name: ClassVar[str] = "mcts"
    Knobs: ClassVar[type[MCTSKnobs]] = MCTSKnobs

    def needs_prm(self, knobs: MCTSKnobs) -> bool:
        # Only rollouts graded by the environment verifier do without it (where the task has one).
        return not (knobs.evaluation == "rollout" and knobs.use_outcome)

    def needs_checker(self, knobs: MCTSKnobs) -> bool:
        return not self.needs_prm(knobs)

    async def run(self, ctx: SearchContext, knobs: MCTSKnobs) -> SearchResult:
        plan = TreeSearch(ctx, knobs)
        found = await never_below_greedy(
            ctx,
            self.name,
            knobs,
            plan.path_cost(),
            plan.reads_prm,
            lambda hold: self.search(ctx, knobs, hold),
            plan.correct,
        )
        found.candidates = [c for c in found.candidates if c.finished]  # answers only, as documented
        found.tree = found.tree or tree_of(plan.root)  # the greedy solution instead: no tree was grown
        return found

    async def search(self, ctx: SearchContext, knobs: MCTSKnobs, hold: Hold) -> SearchResult:
        search = TreeSearch(ctx, knobs, hold)
        stop = await search.run()
        answers = search.answers()
        return result(ctx, self.name, search.answer(answers), answers, stop, knobs, tree=tree_of(search.root))


# --- select -------------------------------------------------------------------------------------


def puct(parent: Node, child: Node, c_puct: float) -> float:
    parent_mean = parent.mean if parent.mean is not None else 0.0
    q = child.mean if child.mean is not None else parent_mean  # an unvisited child: as good as its parent
    return q + c_puct * child.prior * math.sqrt(parent.visits) / (1 + child.visits)


def descend(root: Node, exhausted: set[Node], c_puct: float) -> NodePath | None:
    """The PUCT path from the root to a leaf not chosen yet in this iteration; None when it ran into a
    node whose children are all exhausted (which is then exhausted too, so the next descent avoids it)."""
    path = [root]
    node = root
    while node.children:
        choices = [child for child in node.children if child not in exhausted]
        if not choices:
            exhausted.add(node)
            return None
        parent = node
        node = max(choices, key=lambda child: puct(parent, child, c_puct))
        path.append(node)
    exhausted.add(node)
    return path


def select_leaves(root: Node, count: int, c_puct: float, virtual_loss: float) -> list[NodePath]:
    """Paths to up to `count` distinct open leaves, each under virtual loss, and the finished leaves met
    on the way (up to `count` of them, more only while no open leaf was found: each iteration that can
    expand something does). No open leaf among them means every leaf of the tree is finished."""
    exhausted: set[Node] = set()
    paths: list[NodePath] = []
    open_leaves = finished_leaves = 0
    while open_leaves < count and (finished_leaves < count or open_leaves == 0) and root not in exhausted:
        path = descend(root, exhausted, c_puct)
        if path is None:
            continue
        add_virtual_loss(path, virtual_loss)
        paths.append(path)
        if path[-1].terminal:
            finished_leaves += 1
        else:
            open_leaves += 1
    return paths


def add_virtual_loss(path: NodePath, amount: float) -> None:
    for node in path:
        node.visits += 1
        node.total -= amount


def remove_virtual_loss(path: NodePath, amount: float) -> None:
    for node in path:
        node.visits -= 1
        node.total += amount


# --- expand -------------------------------------------------------------------------------------


def step_priors(continuations: Sequence[Continuation]) -> list[float]:
    """The policy's probabilities of its sampled steps, renormalised over them: a softmax of per-token
    log-probabilities (length-normalised, so that a long step is not punished for its length)."""
    per_token = [max(c.logprob / max(len(c.token_ids), 1), MIN_TOKEN_LOGPROB) for c in continuations]
    top = max(per_token)
    weights = [math.exp(x - top) for x in per_token]
    return [w / sum(weights) for w in weights]


def attach_children(ctx: SearchContext, leaf: Node, continuations: Sequence[Continuation]) -> list[Node]:
    """The leaf's children, one per distinct sampled step; a step sampled twice gets both priors."""
    by_step: dict[tuple[int, ...], Node] = {}
    for continuation, prior in zip(continuations, step_priors(continuations), strict=True):
        known = by_step.get(continuation.token_ids)
        if known is not None:
            known.prior += prior
        else:
            by_step[continuation.token_ids] = Node(
                ctx.grow(leaf.trace, continuation), continuation.text, prior, leaf
            )
    leaf.children = list(by_step.values())
    return leaf.children


def attach_rollouts(
    ctx: SearchContext,
    leaf: Node,
    children: Sequence[Node],
    rollouts: Sequence[Continuation],
    steps: Sequence[Continuation],
) -> None:
    """Each open child's rollout: the first sampled continuation that starts with its step (a step
    sampled twice keeps its first rollout)."""
    by_step: dict[tuple[int, ...], Continuation] = {}
    for rollout, step in zip(rollouts, steps, strict=True):
        by_step.setdefault(step.token_ids, rollout)
    for child in children:
        if not child.terminal:
            child.rollout = ctx.grow(leaf.trace, by_step[child.trace.steps[-1]])


# --- evaluate -----------------------------------------------------------------------------------


def last_step_score(trace: Trace) -> float:
    """The PRM's value of a partial solution: its last step's chance that the solution still succeeds."""
    return trace.scores[-1] if trace.scored and trace.steps else 0.0


# --- backup -------------------------------------------------------------------------------------


def leaf_value(leaf: Node) -> float:
    """What a visit to the leaf found: a finished leaf's own value, an expanded leaf's children's values
    weighted by their priors (the leaf's value under the policy)."""
    if not leaf.children:
        return leaf.own_value or 0.0
    weight = sum(child.prior for child in leaf.children)
    return sum(child.prior * (child.own_value or 0.0) for child in leaf.children) / weight


def backup(path: NodePath, found: float, virtual_loss: float) -> None:
    remove_virtual_loss(path, virtual_loss)
    for node in path:
        node.visits += 1
        node.total += found


# --- one search ---------------------------------------------------------------------------------


@dataclass
class TreeSearch:
    """One request's tree and the iterations that grow it."""

    ctx: SearchContext
    knobs: MCTSKnobs
    hold: Hold | None = None  # the fallback's tokens, released once a solution is finished
    root: Node = field(default_factory=lambda: Node(Trace()))
    pending: list[NodePath] = field(default_factory=list)  # paths under virtual loss in this iteration
    solved: bool = False
    sampled_steps: int = 0
    sampled_step_tokens: int = 0

    @property
    def checker(self) -> Callable[[str], bool] | None:
        return self.ctx.checker if self.knobs.use_outcome else None

    @property
    def reads_prm(self) -> bool:
        return not (self.knobs.evaluation == "rollout" and self.checker is not None)

    async def run(self) -> StopReason:
        iteration = 0
        try:
            while self.knobs.iterations is None or iteration < self.knobs.iterations:
                # An iteration may only revisit finished leaves, without awaiting an engine: yield here so
                # cancellation (a departed client) and other requests always get in.
                await asyncio.sleep(0)
                stop = await self.iterate(iteration)
                if stop is not None:
                    return stop
                iteration += 1
        except SearchStopped as stopped:
            self.release()
            return stopped.reason
        return "done"

    async def iterate(self, iteration: int) -> StopReason | None:
        """One select / expand / evaluate / backup round; a stop reason when the search should end."""
        time_left = self.ctx.budget.time_left()
        if time_left is not None and time_left <= 0:
            return "deadline"
        self.pending = select_leaves(
            self.root, self.knobs.leaves_per_iteration, self.knobs.c_puct, self.knobs.virtual_loss
        )
        open_paths = [path for path in self.pending if not path[-1].terminal]
        if not open_paths:
            self.release()
            return self.exhausted_reason()
        expanding, width = self.within_budget(open_paths)
        if not expanding:
            self.release()
            return "budget"
        children = await self.expand([path[-1] for path in expanding], iteration, width)
        await self.evaluate(children)
        for path in self.pending:
            backup(path, leaf_value(path[-1]), self.knobs.virtual_loss)
        self.pending = []
        self.ctx.report(
            "iteration",
            iteration=iteration,
            expanded=len(expanding),
            new_nodes=len(children),
            units_used=round(self.ctx.budget.used, 2),
            solved=self.solved,
        )
        return "done" if self.solved else None

    def exhausted_reason(self) -> StopReason:
        """Every leaf has ended: the search is done, unless a leaf was cut by a token limit that only the
        budget imposed (it could not pay for a full step)."""
        full_step = self.ctx.sampling.limit(self.ctx.policy.spec, until_step=True) * self.knobs.children
        full_step_units = self.ctx.generation_units(full_step, len(self.ctx.prompt_ids) * self.knobs.children)
        cut = any(node.trace.truncated for node in self.root.walk())
        return "budget" if cut and self.ctx.budget.remaining < full_step_units else "done"

    def release(self) -> None:
        for path in self.pending:
            remove_virtual_loss(path, self.knobs.virtual_loss)
        self.pending = []

    # --- budget planning ------------------------------------------------------------------------

    def within_budget(self, open_paths: list[NodePath]) -> tuple[list[NodePath], int]:
        """The open paths (best first) whose expansion and evaluation the budget can pay, and the children
        each gets; the other paths are dropped from this iteration. When not even the best leaf's full
        expansion fits, it gets the children that do (the last iteration spends what is left). The
        prompt's own expansion is always tried: the adapters cut it to the budget, as they would a first
        sample."""
        available = self.ctx.budget.remaining
        kept: list[NodePath] = []
        cost = 0.0
        for path in open_paths:
            cost += self.expansion_cost(path[-1])
            if cost > available and (kept or self.root.children):
                break
            kept.append(path)
        width = self.knobs.children
        if not kept and open_paths:
            width = int(available // (self.expansion_cost(open_paths[0][-1]) / self.knobs.children))
            kept = open_paths[:1] if width >= 1 else []
        for path in open_paths[len(kept) :]:
            remove_virtual_loss(path, self.knobs.virtual_loss)
            self.pending.remove(path)
        return kept, width

    def path_cost(self) -> float:
        """Budget tokens one whole path takes: one child of the root with its graded rollout, or with
        "prm" evaluation a solution scored step by step."""
        if self.knobs.evaluation == "prm":
            return stepwise_path_cost(self.ctx) * COST_MARGIN
        return self.expansion_cost(self.root) / self.knobs.children

    def expansion_cost(self, leaf: Node) -> float:
        """Compute units that expanding `leaf` and evaluating its children will take, roughly: steps as
        long as those sampled so far, solutions as many steps long as the task's hint says."""
        step = self.mean_step_tokens()
        prefix = len(self.ctx.prompt_ids) + len(leaf.trace.token_ids)  # sent once per child
        read_child = self.ctx.score_cost([leaf.trace]) + step + 1  # the PRM reads prompt, steps, step tags
        generated = step
        read = read_child if self.knobs.evaluation != "rollout" else 0.0
        if self.knobs.evaluation != "prm":
            rest_steps = max(self.ctx.hints.steps - len(leaf.trace.steps) - 1, 1)
            generated += rest_steps * step
            if self.checker is None:
                read += read_child + rest_steps * (step + 1)
        cost = self.ctx.generation_units(generated, prefix) + self.ctx.scoring_units(read)
        return cost * self.knobs.children * COST_MARGIN

    def mean_step_tokens(self) -> float:
        if not self.sampled_steps:
            return self.ctx.hints.step_tokens
        return self.sampled_step_tokens / self.sampled_steps

    # --- expand and evaluate --------------------------------------------------------------------

    async def expand(self, leaves: list[Node], iteration: int, width: int) -> list[Node]:
        """The leaves' new children, in one engine call. With rollout evaluation that call samples whole
        rollouts and their first steps become the children (each rolled out already): the same
        distribution as a step and then a rollout from it, without a second call."""
        prefixes = [self.ctx.prefix(leaf.trace) for leaf in leaves]
        sampling = replace(self.ctx.seeded(iteration), logprobs=True)  # the children's priors
        rolls_out = self.knobs.evaluation != "prm"
        call = self.ctx.policy.rollout if rolls_out else self.ctx.policy.expand
        generation = await call(prefixes, width, sampling)
        children: list[Node] = []
        for leaf, row in zip(leaves, generation.continuations, strict=True):
            steps = [first_step(c, self.ctx.policy.split_steps, self.ctx.policy.decode) for c in row]
            new = attach_children(self.ctx, leaf, steps)
            if rolls_out:
                attach_rollouts(self.ctx, leaf, new, row, steps)
            self.sampled_steps += len(steps)
            self.sampled_step_tokens += sum(len(step.token_ids) for step in steps)
            children += new
        return children

    async def evaluate(self, children: list[Node]) -> None:
        """Every new node's value and first visit, in one verifier call (rollouts came with `expand`)."""
        await self.score_all(children)
        for child in children:
            child.own_value = self.node_value(child)
            child.visits, child.total = 1, child.own_value
        answers = [c.trace for c in children if c.terminal] + [c.rollout for c in children if c.rollout]
        self.solved = self.solved or any(self.correct(answer) for answer in answers)
        if self.hold is not None and any(answer.finished for answer in answers):
            self.hold.release()  # an answer is in hand: the fallback's tokens may go to the search

    async def score_all(self, children: list[Node]) -> None:
        """PRM scores for every trace the grading reads, in one verifier call."""
        nodes = [child for child in children if self.reads_step_score(child)]
        rolled = [(c, c.rollout) for c in children if c.rollout is not None] if self.checker is None else []
        traces = [node.trace for node in nodes] + [rollout for _, rollout in rolled]
        if not traces:
            return
        scored = await score(self.ctx, traces)
        for node, trace in zip(nodes, scored[: len(nodes)], strict=True):
            node.trace = trace
        for (node, _), trace in zip(rolled, scored[len(nodes) :], strict=True):
            node.rollout = trace

    def reads_step_score(self, node: Node) -> bool:
        if node.terminal:
            return self.checker is None  # an answer the checker cannot grade is graded by the PRM
        return self.knobs.evaluation != "rollout"

    def node_value(self, node: Node) -> float:
        if node.terminal:
            return self.grade_answer(node.trace)
        step_value = last_step_score(node.trace)
        if node.rollout is None:
            return step_value
        rollout_value = self.grade_answer(node.rollout)
        return rollout_value if self.knobs.evaluation == "rollout" else (step_value + rollout_value) / 2

    def grade_answer(self, trace: Trace) -> float:
        if self.checker is not None:
            return 1.0 if self.correct(trace) else 0.0
        return value(trace, self.ctx.aggregation)

    def correct(self, trace: Trace) -> bool:
        return self.checker is not None and trace.finished and self.checker(trace.text)

    # --- the answer -----------------------------------------------------------------------------

    def answers(self) -> list[Trace]:
        """Every distinct finished solution in the tree and its rollouts (a scored copy preferred)."""
        by_tokens: dict[tuple[int, ...], Trace] = {}
        for node in self.root.walk():
            for trace in (node.trace, node.rollout):
                if trace is None or not trace.finished:
                    continue
                key = tuple(trace.token_ids)
                known = by_tokens.get(key)
                if known is None or (trace.scored and not known.scored):
                    by_tokens[key] = trace
        return list(by_tokens.values())

    def answer(self, answers: list[Trace]) -> Trace:
        if not answers:
            return self.best_open_node().trace
        pool = [answer for answer in answers if self.correct(answer)] or answers
        if self.knobs.final == "visits":
            end = most_visited_end(self.root).trace.token_ids
            # compared by tokens: the pool may hold the scored rollout that reached the same solution
            chosen = next((answer for answer in pool if answer.token_ids == end), None)
            if chosen is not None:
                return chosen
        return best_by_value(pool, self.ctx.aggregation)

    def best_open_node(self) -> Node:
        """The most valuable unfinished node (the deeper on ties), where the search goes on from when it
        ended without an answer; the root when there is none."""
        open_nodes = [node for node in self.root.walk() if not node.trace.finished and node is not self.root]
        return max(
            open_nodes, key=lambda node: (node.own_value or 0.0, len(node.trace.steps)), default=self.root
        )


def most_visited_end(root: Node) -> Node:
    node = root
    while node.children:
        node = max(node.children, key=lambda child: (child.visits, child.mean or 0.0))
    return node


# --- the reported tree ----------------------------------------------------------------------------


def tree_of(root: Node, limit: int = TREE_LIMIT) -> dict[str, Any]:
    """The tree as JSON-able dicts: the visited nodes, most visited first, at most `limit` of them."""
    return describe(root, visited_nodes(root, limit))


def visited_nodes(root: Node, limit: int) -> set[Node]:
    kept = {root}
    frontier = deque([root])
    while frontier and len(kept) < limit:
        for child in by_visits(frontier.popleft().children):
            if child.visits > 0 and len(kept) < limit:
                kept.add(child)
                frontier.append(child)
    return kept


def by_visits(nodes: list[Node]) -> list[Node]:
    return sorted(nodes, key=lambda node: node.visits, reverse=True)


def describe(node: Node, kept: set[Node]) -> dict[str, Any]:
    return {
        "step": node.step,
        "prior": node.prior,
        "visits": node.visits,
        "value": node.mean,
        "terminal": node.terminal,
        "finished": node.trace.finished,
        "children": [describe(child, kept) for child in by_visits(node.children) if child in kept],
    }
