"""The judge: the closed steps of every join task in, anomaly events out.

Join tasks (``core.task``) count each step of event time and hand it over once their watermark
has passed it. The judge merges the counts of a step from every task (``offer``), and when every
live task has passed the step (``advance``: the slowest task's progress is the judge's
watermark, as the slowest input's is a task's; a task whose inputs are all idle stops holding it
back) it judges the step: the outcome-wide keys on their windows (``windows``) and sequential
test (``sequential``), the slices (``slices``), the alert lifecycle (``alerts``), one page per
incident, and the baseline learned a bucket at a time (``model``). Its input is a few hundred
numbers per step and task, so one judge serves any number of tasks; it never sees a record.

A task that was restored from a checkpoint hands over again steps it had handed before: the judge
keeps, per task, the newest step it has from it, and drops the repeats. A step that arrives after
the judge closed it (a task that was idle came back with records for it) is counted as
``late_steps`` and dropped, as a task drops a late record.
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass

import numpy as np
from river import stats

from . import records as rec
from .alerts import Alert, AlertBook, Decision, Judgement, key_fields, slice_key
from .config import DetectorConfig
from .events import AnomalyEvent, Evidence, Expected, Observed, Rule, State, Window
from .model import MAX_SCORE, Baseline, beta_binomial_sf, score_of
from .outcomes import ALL_INDEX, KEY_INDEX, KEYS, N_KEYS, OUTCOMES
from .sequential import Cusum, coefficients, threshold
from .slices import RESOLVER, SENDER, SliceTable
from .task import Closed
from .windows import FAILURE_FIELDS, SlidingCounts, StepCounts, top_counted, top_values

N_OUTCOMES = len(OUTCOMES)
#: Slice dimensions in the order of ``StepCounts.slice_attempts``; each is also the index of its
#: value in a failure's evidence tuple.
DIMENSIONS = (SENDER, RESOLVER)
_LN10 = math.log(10.0)
EVIDENCE_FIELDS = ("sender_domains", "resolvers", "tenants", "status_codes")
SAMPLES_FIELD = 4
#: An open anomaly keeps at most this many distinct values per evidence field (and samples).
ALERT_EVIDENCE_VALUES = 100


@dataclass(slots=True)
class SliceStep:
    """One closed step of one slice dimension: its counts (``{value: attempts}``,
    ``{(value, outcome index): failures}``) and the CUSUM keys it updated whose statistic
    reached the slices' threshold, as ``(flat key, baseline, statistic)``."""

    attempts: dict
    failures: dict
    reached: list


class _TaskProgress:
    """What the judge knows of one task: the newest step it handed over, whether it is idle."""

    __slots__ = ("through", "idle")

    def __init__(self, through: int | None = None, idle: bool = False) -> None:
        self.through = through
        self.idle = idle


class Judge:
    """The per-step half of the detector (see the module docstring).

    Parameters
    ----------
    config
        The model, alert and slice parameters.
    state
        A ``snapshot()`` to resume from (JSON data).
    series
        Keep one ``series_row`` per closed step in ``self.series`` for a shell to drain.
    """

    def __init__(self, config: DetectorConfig | None = None, state: dict | None = None,
                 series: bool = False) -> None:
        self.config = config = config or DetectorConfig()
        #: With ``series=True``, one ``series_row`` per closed step, for a shell to drain.
        self.series: list[dict] | None = [] if series else None
        model = config.model
        self.step_s = model.step_s
        self.steps_per_bucket = model.bucket_s // model.step_s
        self.windows = SlidingCounts(self.steps_per_bucket, model.long_window_s // model.step_s)
        self.baseline = Baseline(N_KEYS, model.half_life_s, model.bucket_s,
                                 (model.prior_failures, model.prior_successes))
        # Expected OTP attempts per bucket, for the events' ``expected.attempts``.
        self.volume = stats.EWMean(fading_factor=1.0 - self.baseline.decay)
        self.volume_seen = False
        self.books = AlertBook(config.alerts, model.bucket_s)
        # The sequential test of the outcome-wide keys, and the slices with theirs.
        self.cusum = Cusum()
        # CUSUM coefficients by baseline rate: the outcome-wide baselines change once a bucket.
        self._ratios: dict[float, tuple] = {}
        self._params: tuple | None = None
        # Per step: each slice opened in it, its share of the step's attempts (``_one_page``).
        self._shares: dict[str, float] = {}
        budget = config.alerts.false_alarms_per_day / 2
        self.h_outcome = threshold(budget, N_KEYS, model.step_s)
        sl = config.slices
        # Only the senders' deviant values are read (the traffic mix); the resolvers' are not
        # listed.
        self.slices = [
            (d, SliceTable(DIMENSIONS[d], capacity, N_OUTCOMES, self.baseline.decay,
                           sl.prior_attempts, sl.warmup_attempts, lists_deviant=(d == 0)))
            for d, capacity in enumerate((sl.sender_capacity, sl.resolver_capacity)) if capacity]
        self._set_slice_threshold()
        #: The tasks whose steps are merged, by name, and the steps not judged yet.
        self.tasks: dict[str, _TaskProgress] = {}
        self.open_steps: dict[int, StepCounts] = {}
        self.next_step: int | None = None
        self.first_ts: float | None = None
        self.learned_attempts = 0
        self.bucket_max_score = np.zeros(N_KEYS)
        self.counters: Counter[str] = Counter()
        if state is not None:
            self._restore(state)

    # ------------------------------------------------------------------ input

    def add_task(self, task: str) -> None:
        """Declare a task before it hands anything over, so it holds the judge back till then."""
        self.tasks.setdefault(task, _TaskProgress())

    def offer(self, task: str, closed: Closed, idle: bool = False) -> None:
        """Merge what ``task`` handed over (``JoinTask.advance``/``close``); ``idle``: its inputs
        are idle or ended, so it no longer holds the judge back (until it hands over again)."""
        progress = self.tasks.get(task)
        if progress is None:
            progress = self.tasks[task] = _TaskProgress()
        known = progress.through
        for index, counts in closed.steps.items():
            if known is not None and index <= known:
                continue                           # handed over before (a restored task)
            if self.next_step is not None and index < self.next_step:
                self.counters["late_steps"] += 1   # judged already: a task that was idle
                continue
            mine = self.open_steps.get(index)
            if mine is None:
                self.open_steps[index] = counts
            else:
                mine.merge(counts)
        if closed.through is not None and (known is None or closed.through > known):
            progress.through = closed.through
        progress.idle = idle
        if closed.first_ts is not None and (self.first_ts is None
                                            or closed.first_ts < self.first_ts):
            self.first_ts = closed.first_ts

    def finish_task(self, task: str) -> None:
        """A task's inputs are idle or ended: it stops holding the judge back."""
        progress = self.tasks.get(task)
        if progress is not None:
            progress.idle = True

    def through(self) -> int | None:
        """The newest step every live task has passed (every task, when all are idle)."""
        live = [p.through for p in self.tasks.values() if not p.idle]
        if live:
            return None if None in live else min(live)   # type: ignore[type-var]
        passed = [p.through for p in self.tasks.values() if p.through is not None]
        return max(passed) if passed else None

    def advance(self) -> list[AnomalyEvent]:
        """Judge every step all live tasks have passed; the events that made due."""
        events: list[AnomalyEvent] = []
        last = self.through()
        if last is not None:
            self._close_steps_through(last, events)
        return events

    def close(self) -> list[AnomalyEvent]:
        """End of input (every task closed): judge every step handed over; open anomalies stay
        open."""
        events: list[AnomalyEvent] = []
        passed = [p.through for p in self.tasks.values() if p.through is not None]
        last = max(passed + list(self.open_steps), default=None)
        if last is not None:
            self._close_steps_through(last, events)
        return events

    # ------------------------------------------------------------ event time

    def _close_steps_through(self, last: int, events: list[AnomalyEvent]) -> None:
        """Judge every step up to index ``last``, in order; a gap with no traffic longer than the
        long window is skipped (``_skip_to``)."""
        if self.next_step is None:
            # The first step judged is the earliest handed over: every task that has passed
            # ``last`` has handed over all its steps up to it.
            first = min(self.open_steps, default=None)
            if first is None or first > last:
                return
            self.next_step = first
        while self.next_step <= last:
            if self.windows.is_empty() and not self.books.open:
                target = min(self.open_steps, default=last + 1)
                target = min(target, last + 1)
                if target - self.next_step > self.windows.long_steps:
                    self._skip_to(target)
                    continue
            self._close_step(self.next_step, events)
            self.next_step += 1

    def _skip_to(self, target: int) -> None:
        """Jump over a gap with no traffic: the baseline forgets as it would have, nothing else."""
        assert self.next_step is not None        # (set before the first step closes)
        per_bucket = self.steps_per_bucket
        buckets = target // per_bucket - self.next_step // per_bucket
        self.baseline.fade(buckets)
        self._ratios.clear()
        self._params = None
        for _, table in self.slices:
            table.fade(buckets)
        for _ in range(min(buckets, 10_000)):
            self.volume.update(0.0)
        self.windows.pushed += target - self.next_step
        self.windows.clear()
        self.bucket_max_score[:] = 0.0
        self.next_step = target

    def _close_step(self, index: int, events: list[AnomalyEvent]) -> None:
        """Judge the step ``index``: the outcome-wide keys on their windows and sequential test,
        the slices on theirs, then one page per incident (``_one_page``)."""
        step = self.open_steps.pop(index, None) or StepCounts()
        step.canonical()
        windows = self.windows
        end = (index + 1) * self.step_s
        start = end - self.step_s
        model, alerts = self.config.model, self.config.alerts
        a, b, expected = self._baselines()
        parent = expected[:N_OUTCOMES]
        slice_steps = [self._slice_step(d, table, step, parent, start)
                       for d, table in self.slices]
        excess = self._mix_excess(step)
        windows.push(step, excess)
        short_n, long_n = windows.short_attempts, windows.long_attempts
        short_x, long_x = windows.short_failures, windows.long_failures
        # A window's expected rate follows the traffic mix: when senders that always fail send
        # more, their usual failures are expected, not an incident.
        short_p = _mixed_rate(expected, windows.short_expected, short_n)
        long_p = _mixed_rate(expected, windows.long_expected, long_n)
        step_p = expected if excess is None else _mixed_rate(expected, excess, step.attempts)
        if self.series is not None:
            self.series.append(series_row(end, step, step_p))
        statistic = self._outcome_sequential(step, step_p, start)
        sequential_fires = [k for k, value in enumerate(statistic)
                            if value >= self.h_outcome
                            and self._run_passes(self.cusum, k, value, step_p[k], self.h_outcome)]
        candidates = set(key for key in self.books.open if "|" not in key)
        short_gate = self._gate(short_n, short_x, short_p, alerts.min_lift)
        long_gate = self._gate(long_n, long_x, long_p, alerts.long_min_lift)
        candidates.update(key for key, opens_short, opens_long
                          in zip(KEYS, short_gate, long_gate) if opens_short or opens_long)
        candidates.update(KEYS[k] for k in sequential_fires)
        alertable = self._alertable(end)
        decisions: list[Decision] = []
        # Excess failures of open outcome keys in each window, to judge ALL against.
        explained_short = explained_long = 0.0
        for key in sorted(candidates, key=KEY_INDEX.__getitem__):
            k = KEY_INDEX[key]
            ak, bk = _beta_at(a[k], b[k], short_p[k])
            short = self._judge(short_n, int(short_x[k]), ak, bk, bool(short_gate[k]),
                                end - model.bucket_s, end, "short")
            ak, bk = _beta_at(a[k], b[k], long_p[k])
            long = self._judge(long_n, int(long_x[k]), ak, bk, bool(long_gate[k]),
                               end - model.long_window_s, end, "long")
            sequential = self._sequential_judgement(self.cusum, k, statistic[k], step_p[k],
                                                    k in sequential_fires, end)
            self.bucket_max_score[k] = max(self.bucket_max_score[k], short.score, long.score)
            alert = self.books.open.get(key)
            recent, elevated = None, False
            if alert is not None:
                _merge_evidence(alert.evidence, step.evidence.get(k, ()))
                recent, elevated = self._recent(alert, step.attempts, step.failures[k],
                                                step_p[k], a[k] + b[k], end)
            may_open = alertable
            if k == ALL_INDEX and alert is None:
                # ALL is for failures spread over outcomes: it stays quiet when open outcome
                # keys already explain half of its excess in either window (one incident, one
                # page).
                may_open = alertable and not (
                    explained_short >= 0.5 * (short_x[k] - short_n * short_p[k])
                    or explained_long >= 0.5 * (long_x[k] - long_n * long_p[k]))
            decision = self.books.decide(key, end, step.attempts, step.failures[k], may_open,
                                         short, long, sequential, recent, elevated)
            if decision is not None:
                self._opened_or_closed(decision, self.cusum.reset, k)
                decisions.append(decision)
            if k != ALL_INDEX and key in self.books.open:
                explained_short += max(0.0, short_x[k] - short_n * short_p[k])
                explained_long += max(0.0, long_x[k] - long_n * long_p[k])
        self._shares.clear()
        for (d, table), slice_step in zip(self.slices, slice_steps):
            self._judge_slices(d, table, slice_step, step, parent, alertable, end, decisions)
        if not alertable:
            # No evidence is gathered against a baseline still being learned.
            self.cusum.reset_all()
            for _, table in self.slices:
                table.cusum.reset_all()
        self._one_page(decisions)
        for state, alert, judgement in decisions:
            if alert.paged:
                events.append(self._event(state, alert, judgement, end))
            if state == "resolved":
                self._drop_explained(alert)
        if (index + 1) % self.steps_per_bucket == 0:
            self._learn_bucket(end)

    # ------------------------------------------------------- sequential test

    def _outcome_sequential(self, step: StepCounts, step_p: list[float],
                            start: float) -> list[float]:
        """Fold the step into the outcome-wide CUSUMs; their statistic (nats) per key."""
        cusum, n, lift = self.cusum, step.attempts, self.config.alerts.min_lift
        if not n:
            return [cusum.statistic(k) for k in range(N_KEYS)]
        ratios = self._ratios
        statistic = []
        for k, (x, p) in enumerate(zip(step.failures, step_p)):
            if not x and k not in cusum.runs:
                statistic.append(0.0)
                continue
            found = ratios.get(p)
            if found is None:
                found = ratios[p] = coefficients(p, lift)
            statistic.append(cusum.update(k, n, x, found, start))
        return statistic

    def _run_passes(self, cusum: Cusum, key: int, statistic: float, baseline: float,
                    h: float) -> bool:
        """The sequential test fires: the statistic reached ``h`` and the run since its change
        point passes the windows' guards (failures, lift, excess)."""
        if statistic < h:
            return False
        alerts = self.config.alerts
        _, attempts, failures = cusum.run(key)
        rate = failures / max(attempts, 1.0)
        return (failures >= alerts.min_failures and rate >= baseline * alerts.min_lift
                and rate - baseline >= alerts.min_excess_rate)

    def _sequential_judgement(self, cusum: Cusum, key: int, statistic: float, baseline: float,
                              fires: bool, end: float) -> Judgement:
        """The sequential test's verdict; its window is the run, its score ``log10`` of the
        likelihood ratio."""
        start, attempts, failures = cusum.run(key)
        return Judgement(int(attempts), int(failures), float(baseline),
                         min(MAX_SCORE, float(statistic) / _LN10), fires,
                         start if statistic > 0 else end, end, "cusum")

    def _recent(self, alert: Alert, attempts: int, failures: int, baseline: float,
                strength: float, end: float) -> tuple[Judgement, bool]:
        """An open anomaly's newest ``recent_steps`` steps scored like a window against the
        baseline (of weight ``strength``), and whether it is still elevated: for an anomaly of
        the sequential test, until a reverse CUSUM of "back to ``baseline``" against "still at
        the rate that opened it" reaches ``resolve_score`` (in log10 units)."""
        recent = alert.recent
        recent.append([attempts, failures])
        del recent[:-max(1, alert.recent_steps)]
        n = int(round(sum(pair[0] for pair in recent)))
        x = int(round(sum(pair[1] for pair in recent)))
        a, b = _beta_at(float(strength) * baseline, float(strength) * (1.0 - baseline), baseline)
        score = score_of(x, n, a, b) if x else 0.0
        p0 = min(max(baseline, 1e-9), 1.0 - 1e-6)
        p1 = min(max(alert.incident_rate, p0), 1.0 - 1e-6)
        if p1 > p0:
            alert.back = max(0.0, alert.back + failures * math.log(p0 / p1)
                             + (attempts - failures) * (math.log1p(-p0) - math.log1p(-p1)))
        else:
            alert.back = math.inf
        elevated = alert.back < self.config.alerts.resolve_score * _LN10
        return Judgement(n, x, float(baseline), score, False,
                         end - len(recent) * self.step_s, end, "cusum"), elevated

    def _opened_or_closed(self, decision: tuple, reset, key: int) -> None:
        """A key's CUSUM starts again when its anomaly opens or resolves: the next anomaly of
        the key must rest on evidence of its own. An anomaly opening gets its recent window:
        long enough for about ``min_failures`` failures at the rate that opened it, from one
        bucket to ``resolve_hold_s``, first filled with the opening run's average step."""
        state, alert, judgement = decision
        if state == "open":
            reset([key])
            run_steps = self._steps_of(judgement)
            _merge_evidence(alert.evidence, self._evidence_of(alert, run_steps))
            per_step = judgement.failures / run_steps
            config = self.config
            wanted = math.ceil(config.alerts.min_failures / per_step) if per_step > 0 else 0
            longest = max(self.steps_per_bucket, int(config.alerts.resolve_hold_s // self.step_s))
            alert.recent_steps = min(max(wanted, self.steps_per_bucket), longest)
            fill = min(run_steps, alert.recent_steps)
            alert.recent = [[judgement.attempts / run_steps, per_step] for _ in range(fill)]
            alert.incident_rate = judgement.rate
            alert.back = 0.0
        elif state == "resolved":
            reset([key])

    # ---------------------------------------------------------------- slices

    def _slice_step(self, d: int, table: SliceTable, step: StepCounts, parents: list[float],
                    start: float) -> SliceStep:
        """Count one step into dimension ``d`` and run the sequential tests it touches.

        A resolver's baseline follows its traffic mix as the outcome-wide ones do: when senders
        whose zones always fail send more through it, it is expected to fail more."""
        attempts, failures = step.slice_attempts[d], step.slice_failures[d]
        table.add_step(attempts, failures)
        hot = table.hot(attempts, failures)
        reached: list[tuple[int, float, float]] = []
        if not hot:
            return SliceStep(attempts, failures, reached)
        extra: dict[str, np.ndarray] = {}
        if d == 1 and step.pairs:
            senders = self.slices[0][1].deviant
            for (resolver, sender), count in step.pairs.items():
                excess = senders.get(sender)      # still deviant at the bucket's end
                if excess is not None:
                    extra[resolver] = extra.get(resolver, 0.0) + count * excess
        lift, names, h = self.config.alerts.min_lift, table.names, self.h_slices
        rate, update = table.rate, table.cusum.update
        for flat, k, n, x in hot:
            baseline, ratios = rate(flat, parents[k], lift)
            if extra:
                mixed = extra.get(names[flat // N_OUTCOMES])
                if mixed is not None and parents[k] + float(mixed[k]) / n > baseline:
                    baseline = parents[k] + float(mixed[k]) / n
                    ratios = coefficients(baseline, lift)
            statistic = update(flat, n, x, ratios, start)
            if statistic >= h:
                reached.append((flat, baseline, statistic))
        return SliceStep(attempts, failures, reached)

    def _mix_excess(self, step: StepCounts) -> np.ndarray | None:
        """Failures per key the step's traffic mix makes expected beyond the outcome-wide
        baselines: the excess of each sender that usually fails more
        (``SliceTable.deviant``); ``None`` when the step has none of them."""
        if not self.slices or self.slices[0][0] != 0 or not step.attempts:
            return None
        deviant, counts = self.slices[0][1].deviant, step.slice_attempts[0]
        if len(deviant) > len(counts):
            found = [(counts[v], deviant[v]) for v in counts if v in deviant]
        else:
            found = [(counts[v], excess) for v, excess in deviant.items() if v in counts]
        if not found:
            return None
        excess = np.zeros(N_KEYS)
        for n, rates in found:
            excess[:N_OUTCOMES] += n * rates
        excess[ALL_INDEX] = excess[:N_OUTCOMES].sum()
        return excess

    def _baselines(self) -> tuple[np.ndarray, np.ndarray, list[float]]:
        """The outcome-wide Beta parameters ``(a, b)`` and rates (a list: the step reads them one
        key at a time): they change once a bucket."""
        if self._params is None:
            a, b = self.baseline.params()
            self._params = a, b, (a / (a + b)).tolist()
        return self._params

    def _judge_slices(self, d: int, table: SliceTable, slice_step: SliceStep,
                      step: StepCounts, parent: list[float], alertable: bool, end: float,
                      decisions: list) -> None:
        """Decisions of dimension ``d``'s slices: those whose test fired, and the open ones."""
        dimension = table.dimension
        due: dict[str, tuple[int, int, Judgement | None]] = {}
        for flat, baseline, statistic in slice_step.reached:
            if self._run_passes(table.cusum, flat, statistic, baseline, self.h_slices):
                row, k = divmod(flat, N_OUTCOMES)
                key = slice_key(OUTCOMES[k], dimension, table.names[row])
                due[key] = (row, k, self._sequential_judgement(
                    table.cusum, flat, statistic, baseline, True, end))
        if not due and not self.books.open:
            return
        for key in self.books.open:
            fields = key_fields(key)
            value = fields.get(dimension)
            if value is not None and key not in due:
                due[key] = (table.row_of.get(value, -1), KEY_INDEX[fields["outcome"]], None)
        for key in sorted(due):
            row, k, sequential = due[key]
            value = key_fields(key)[dimension]
            attempts = slice_step.attempts.get(value, 0)
            failures = slice_step.failures.get((value, k), 0)
            alert = self.books.open.get(key)
            recent, elevated = None, False
            if alert is not None:
                _merge_evidence(alert.evidence, [f for f in step.evidence.get(k, ())
                                                 if f[d] == value])
                if row >= 0:
                    baseline, _ = table.rate(row * N_OUTCOMES + k, parent[k],
                                             self.config.alerts.min_lift)
                    strength = table.strength(row, k)
                else:
                    baseline, strength = parent[k], table.prior_attempts
                recent, elevated = self._recent(alert, attempts, failures, baseline, strength,
                                                end)
            decision = self.books.decide(key, end, attempts, failures, alertable,
                                         sequential=sequential, recent=recent,
                                         still_elevated=elevated)
            if decision is not None and decision[0] == "open" and step.attempts:
                self._shares[key] = attempts / step.attempts
            if decision is not None:
                if row >= 0:
                    self._opened_or_closed(decision, table.cusum.reset, row * N_OUTCOMES + k)
                decisions.append(decision)

    # -------------------------------------------------------- one page each

    def _one_page(self, decisions: list) -> None:
        """Of the anomalies opened at this step, page those no open page explains.

        An anomaly *explains* another of the same outcome when at least half of the other's
        failures (in its window's evidence) belong to it: an outcome-wide anomaly explains every
        slice of its outcome, a sender's anomaly explains the outcome-wide one when that sender
        holds half its failures, a resolver's the senders whose failures went through it. An
        explained anomaly is not paged: its id is in the page's ``related`` (and the page's
        events carry it from then on). Among anomalies opened at the same step the broadest
        goes first, unless one slice explains it with its failures concentrated there
        (``_concentrated``: not a slice that is most of the traffic anyway): then that slice
        is the page, naming where the incident is.
        """
        opened = [(alert, judgement) for state, alert, judgement in decisions if state == "open"]
        if not opened:
            return
        new = {alert.key for alert, _ in opened}
        for alert, judgement in opened:
            if alert.key == "ALL":
                # ALL is for failures spread over outcomes: open anomalies of other keys whose
                # failures make half of its excess explain it (the largest is its page).
                excess = judgement.failures - judgement.attempts * judgement.expected_rate
                others = sorted((c for c in self.books.open.values() if c.key != "ALL"),
                                key=lambda c: (-c.failures, c.key))
                if others and sum(c.failures for c in others) >= 0.5 * excess:
                    page = others[0] if others[0].paged else self._page_of(others[0])
                    if page is not None:
                        alert.paged, alert.parent = False, page.id
                        page.related.append(alert.id)
        for outcome in sorted({key_fields(alert.key)["outcome"] for alert, _ in opened}):
            if outcome == "ALL":
                continue
            family = [(alert, judgement) for alert, judgement in opened
                      if key_fields(alert.key)["outcome"] == outcome]
            family.sort(key=lambda item: _breadth(item[0].key, -item[1].failures))
            wide = family[0] if "|" not in family[0][0].key else None
            if wide is not None:
                # A slice names the incident only when it is a part of the traffic, not all.
                explaining = [item for item in family[1:]
                              if self._concentrated(item[0], *wide)]
                if explaining:
                    family.remove(explaining[0])
                    family.insert(0, explaining[0])
            # Every open anomaly of the outcome may explain a new one; a new one explained by
            # an anomaly that is itself explained joins that one's page.
            known = [alert for alert in self.books.open.values()
                     if alert.key not in new and key_fields(alert.key)["outcome"] == outcome]
            for alert, judgement in family:
                cover = next((c for c in known if self._explains(c, alert, judgement)), None)
                known.append(alert)
                if cover is None:
                    continue
                page = cover if cover.paged else self._page_of(cover)
                if page is None:
                    continue
                alert.paged, alert.parent = False, page.id
                page.related.append(alert.id)

    def _concentrated(self, part: Alert, whole: Alert, judgement: Judgement) -> bool:
        """``part`` (a slice) holds half of ``whole``'s failures, far more than its share of the
        attempts would give it by chance (binomial tail below ``1e-3``)."""
        fields = key_fields(part.key)
        (dimension, value), = ((f, v) for f, v in fields.items() if f != "outcome")
        failures = self._evidence_of(whole, self._steps_of(judgement))
        d = DIMENSIONS.index(dimension)
        mine = sum(1 for f in failures if f[d] == value)
        share = min(max(self._shares.get(part.key, 1.0), 1e-9), 1.0 - 1e-9)
        if not failures or mine < 0.5 * len(failures):
            return False
        return beta_binomial_sf(mine, len(failures), share * 1e12, (1 - share) * 1e12) < 1e-3

    def _page_of(self, alert: Alert) -> Alert | None:
        """The open, paged anomaly that explains ``alert``."""
        return next((a for a in self.books.open.values() if a.paged and a.id == alert.parent),
                    None)

    def _explains(self, page: Alert, alert: Alert, judgement: Judgement,
                  at_least: float = 0.5) -> bool:
        """``page`` holds at least half (and ``at_least``) of ``alert``'s failures."""
        fields = key_fields(page.key)
        if len(fields) == 1:
            return True
        (dimension, value), = ((f, v) for f, v in fields.items() if f != "outcome")
        failures = self._evidence_of(alert, self._steps_of(judgement))
        if not failures:
            return False
        d = DIMENSIONS.index(dimension)
        share = sum(1 for f in failures if f[d] == value) / len(failures)
        return share >= max(0.5, at_least)

    def _evidence_of(self, alert: Alert, steps: int) -> list:
        """The failure tuples of ``alert``'s key over the newest ``steps`` steps."""
        fields = key_fields(alert.key)
        found = self.windows.evidence(KEY_INDEX[fields["outcome"]], steps)
        for dimension, value in fields.items():
            if dimension != "outcome":
                d = DIMENSIONS.index(dimension)
                found = [f for f in found if f[d] == value]
        return found

    def _drop_explained(self, page: Alert) -> None:
        """A page resolved: the anomalies it explained end with it, and the evidence its
        incident left in the sequential tests of its outcome and of ALL is spent."""
        self.cusum.reset([KEY_INDEX[key_fields(page.key)["outcome"]], ALL_INDEX])
        for key in [key for key, alert in self.books.open.items() if alert.parent == page.id]:
            self.books.close(key)
            fields = key_fields(key)
            k = KEY_INDEX[fields["outcome"]]
            if len(fields) == 1:
                self.cusum.reset([k])
                continue
            for d, table in self.slices:
                row = table.row_of.get(fields.get(table.dimension, ""))
                if table.dimension in fields and row is not None:
                    table.cusum.reset([row * N_OUTCOMES + k])

    def _steps_of(self, judgement: Judgement) -> int:
        return max(1, int(round((judgement.end - judgement.start) / self.step_s)))

    def _gate(self, attempts: int, failures: np.ndarray, expected: list[float],
              min_lift: float) -> list[bool]:
        """Cheap preconditions of an alert, per key (see ``alerts`` for their meaning). Plain
        Python: for a dozen keys, most of them stopped by the first, it beats numpy's calls."""
        if attempts <= 0:
            return [False] * N_KEYS
        alerts = self.config.alerts
        least, excess = alerts.min_failures, alerts.min_excess_rate
        return [x >= least and x / attempts >= p * min_lift and x / attempts - p >= excess
                for x, p in zip(failures.tolist(), expected)]

    def _judge(self, attempts: int, failures: int, a: float, b: float, gate: bool,
               start: float, end: float, rule: Rule) -> Judgement:
        score = score_of(failures, attempts, a, b) if failures else 0.0
        expected = a / (a + b)
        fires = gate and score >= self.config.alerts.open_score
        return Judgement(attempts, failures, expected, score, fires, start, end, rule)

    def _slice_threshold(self) -> float:
        """The slices' CUSUM threshold: half the false-alarm budget, shared by every slice
        watched (``sequential.threshold``)."""
        watched = sum(table.live_slices() for _, table in self.slices)
        return threshold(self.config.alerts.false_alarms_per_day / 2, watched * N_OUTCOMES,
                         self.step_s)

    def _alertable(self, end: float) -> bool:
        """Past the warm-up: ``warmup_s`` of event time and ``warmup_attempts`` learned."""
        model = self.config.model
        return (self.first_ts is not None and end - self.first_ts >= model.warmup_s
                and self.learned_attempts >= model.warmup_attempts)

    def _learn_bucket(self, end: float) -> None:
        model = self.config.model
        windows = self.windows
        attempts = windows.short_attempts
        learn = (self.bucket_max_score < model.learn_max_score)
        # Evidence halfway to an alarm holds the baseline too: a slow ramp's minutes are each
        # unremarkable, and learning them would raise the baseline that has to judge the ramp.
        for k in self.cusum.runs:
            if self.cusum.statistic(k) >= self.h_outcome / 2:
                learn[k] = False
        if not self._alertable(end):
            learn[:] = True             # warming up: everything seen is the normal to learn
        frozen = set()
        for key, alert in self.books.open.items():
            if end - alert.opened_at < model.max_freeze_s:
                frozen.add(key)
                if "|" not in key:
                    learn[KEY_INDEX[key]] = False
        self.baseline.learn(attempts, windows.short_failures, learn)
        self._ratios.clear()
        self._params = None
        self.learned_attempts += attempts
        self.volume.update(float(attempts))
        self.volume_seen = True
        self.bucket_max_score[:] = 0.0
        a, b = self.baseline.params()
        parent = (a / (a + b))[:N_OUTCOMES]
        halfway = self._slice_threshold() / 2
        for _, table in self.slices:
            pinned = set()
            for key in frozen:
                fields = key_fields(key)
                if table.dimension in fields:
                    pinned.add((fields[table.dimension], KEY_INDEX[fields["outcome"]]))
            for flat in table.cusum.runs:
                if table.cusum.statistic(flat) >= halfway:
                    row, k = divmod(flat, N_OUTCOMES)
                    pinned.add((table.names[row], k))
            table.close_bucket(parent, pinned, model.learn_max_score)
        self._set_slice_threshold()

    def _set_slice_threshold(self) -> None:
        """Set ``h_slices``: the slices watched change only when a bucket is learned or a
        state restored, so their CUSUM threshold is computed then."""
        self.h_slices = self._slice_threshold()

    # ---------------------------------------------------------------- output

    def _event(self, state: State, alert: Alert, judgement: Judgement,
               end: float) -> AnomalyEvent:
        alerts, model = self.config.alerts, self.config.model
        self.counters[f"anomalies:{state}"] += 1
        top = alerts.evidence_top
        if state == "resolved":
            # The whole anomaly: its totals and the evidence gathered while it was open.
            window_start, window_end = alert.since, alert.last_elevated_end
            attempts, failures = alert.attempts, alert.failures
            found_top = [top_counted(alert.evidence.get(field, {}), top)
                         for field in range(len(EVIDENCE_FIELDS))]
        else:
            window_start, window_end = judgement.start, judgement.end
            attempts, failures = judgement.attempts, judgement.failures
            found = self._evidence_of(alert, self._steps_of(judgement))
            found_top = [top_values(found, field, top) for field in range(len(EVIDENCE_FIELDS))]
        samples = alert.evidence.get(SAMPLES_FIELD, {})
        senders, resolvers, tenants, status_codes = found_top
        evidence = Evidence(senders, resolvers, tenants, status_codes,
                            sorted(samples)[: alerts.evidence_samples])
        rate = failures / attempts if attempts else 0.0
        expected_rate = judgement.expected_rate
        window_buckets = (window_end - window_start) / model.bucket_s
        expected_attempts = self.volume.get() * window_buckets if self.volume_seen else 0.0
        key = key_fields(alert.key)
        name = " ".join([key["outcome"]] + [v for f, v in key.items() if f != "outcome"])
        if state == "resolved":
            how = "; back to normal"
        elif judgement.rule == "cusum" and state == "open":
            how = f"; likelihood ratio 1e{judgement.score:.1f} since {rec.format_ts(window_start)}"
        else:
            how = f"; p = 1e-{judgement.score:.1f}"
        reason = (f"{name} OTP failures {failures}/{attempts} ({rate:.1%}) vs expected "
                  f"{expected_rate:.2%} over {int(window_end - window_start)} s" + how)
        return AnomalyEvent(
            id=alert.id,
            state=state,
            key=key,
            detected_at=rec.format_ts(end + self.config.join.window_after_s),
            since=rec.format_ts(alert.since),
            window=Window(rec.format_ts(window_start), rec.format_ts(window_end)),
            observed=Observed(attempts, failures, round(rate, 6)),
            expected=Expected(round(expected_attempts, 2), round(attempts * expected_rate, 3),
                              round(expected_rate, 6)),
            score=round(judgement.score, 2),
            severity=alert.severity if state != "open" else self.books.severity(judgement),
            rule=judgement.rule if state != "resolved" else alert.rule,
            reason=reason,
            evidence=evidence,
            related=sorted(alert.related),
        )


    # ----------------------------------------------------------------- state

    @property
    def watermark(self) -> float:
        """The end of the last step judged (epoch seconds; -inf before the first)."""
        return -math.inf if self.next_step is None else self.next_step * self.step_s

    def open_anomalies(self) -> int:
        return len(self.books.open)

    def stats(self) -> dict:
        """Counters plus gauges."""
        out = dict(self.counters)
        for _, table in self.slices:
            out[f"slices_{table.dimension}"] = table.live_slices()
            out[f"slices_{table.dimension}_evicted"] = table.evicted
        out["open_anomalies"] = len(self.books.open)
        return out

    def snapshot(self) -> dict:
        """The judge's state as JSON-able data (no pickle: a checkpoint is input, too)."""
        return {
            "tasks": {name: [p.through, p.idle] for name, p in sorted(self.tasks.items())},
            "open_steps": {str(i): s.to_plain() for i, s in sorted(self.open_steps.items())},
            "next_step": self.next_step,
            "windows": self.windows.snapshot(),
            "baseline": self.baseline.snapshot(),
            "volume": self.volume.get() if self.volume_seen else None,
            "first_ts": self.first_ts,
            "learned_attempts": self.learned_attempts,
            "bucket_max_score": self.bucket_max_score.tolist(),
            "alerts": self.books.snapshot(),
            "cusum": self.cusum.snapshot(),
            "slices": {table.dimension: table.snapshot() for _, table in self.slices},
            "counters": dict(self.counters),
        }

    def _restore(self, state: dict) -> None:
        self.tasks = {str(name): _TaskProgress(None if row[0] is None else int(row[0]),
                                               bool(row[1]))
                      for name, row in state["tasks"].items()}
        self.open_steps = {int(i): StepCounts.from_plain(row)
                           for i, row in state["open_steps"].items()}
        self.next_step = state["next_step"]
        self.windows.restore(state["windows"])
        self.baseline.restore(state["baseline"])
        self._params = None
        if state["volume"] is not None:
            self.volume.update(float(state["volume"]))   # an EWMean's first update is its value
            self.volume_seen = True
        self.first_ts = state["first_ts"]
        self.learned_attempts = int(state["learned_attempts"])
        self.bucket_max_score = np.asarray(state["bucket_max_score"], dtype=float)
        self.books.restore(state["alerts"])
        self.cusum.restore(state["cusum"])
        a, b = self.baseline.params()
        for _, table in self.slices:
            if table.dimension in state["slices"]:
                table.restore(state["slices"][table.dimension], (a / (a + b))[:N_OUTCOMES])
        self._set_slice_threshold()
        self.counters = Counter(state["counters"])


def _merge_evidence(evidence: dict, failures) -> None:
    """Fold failure tuples into an anomaly's per-field counts, bounded per field.

    Message ids are kept as the first ``ALERT_EVIDENCE_VALUES`` seen (samples, not counts).
    """
    for failure in failures:
        for field_index, value in enumerate(failure[:FAILURE_FIELDS]):
            if not value:
                continue
            counts = evidence.get(field_index)
            if counts is None:
                counts = evidence[field_index] = {}
            if value in counts:
                counts[value] += 1
            elif len(counts) < ALERT_EVIDENCE_VALUES:
                counts[value] = 1



def _mixed_rate(expected: list[float], excess: np.ndarray, attempts: float) -> list[float]:
    """The expected rate per key: the baseline, plus what the traffic mix adds to it (plain
    Python: for a dozen keys it beats numpy's calls; ``0.0 if 0.0 > x else x`` is
    ``np.maximum(x, 0.0)``)."""
    if attempts <= 0:
        return expected
    excess = excess.tolist()
    if not any(excess):
        return expected
    return [rate + (0.0 if 0.0 > more else more) / attempts
            for rate, more in zip(expected, excess)]


def _beta_at(a: float, b: float, rate: float) -> tuple[float, float]:
    """Beta parameters with the weight of ``(a, b)`` and the mean ``rate``."""
    a, b, rate = float(a), float(b), float(rate)
    if rate == a / (a + b):
        return a, b
    strength = a + b
    rate = min(max(rate, 1e-12), 1.0 - 1e-9)
    return strength * rate, strength * (1.0 - rate)


def _breadth(key: str, tiebreak: float) -> tuple:
    """Order of anomalies opened together: outcome-wide, then resolvers, then senders."""
    fields = key_fields(key)
    rank = 0 if len(fields) == 1 else 1 if RESOLVER in fields else 2
    return rank, tiebreak, key


def series_row(end: float, step: StepCounts, expected) -> dict:
    """One closed step as JSON-able data: its end (epoch s), OTP attempts, failures per
    outcome-wide key that had any (``ALL`` included), and the expected rate of every key in
    ``KEYS`` order (the baseline, with what the step's traffic mix adds)."""
    return {"end": end, "attempts": step.attempts,
            "failures": {KEYS[k]: int(x) for k, x in enumerate(step.failures) if x},
            "expected": [float(f"{p:.4g}") for p in expected]}
