"""asv benchmarks of the OT solvers on the problems of ``otransfer solvers bench``.

One class per view of representation transfer (``harness.reports.bench.VIEWS``); parameters are the
installed methods of the solver registry and a few modest sizes. ``setup`` builds the seeded
problem (the same generator as the benchmark) and raises ``NotImplementedError`` for a method
that cannot run on it, or that would blow asv's time budget; ``time_*`` makes one call;
``track_*`` reports accuracy with a unit.

Run (from the repository root)::

    asv machine --yes
    asv run --python=same --quick --set-commit-hash $(git rev-parse HEAD)
    otransfer report solvers

(asv discards the results of ``--python=same`` runs unless ``--set-commit-hash`` is given.)
"""

import importlib

import solvers
from harness.reports import bench

#: Seed of the problem generator, as ``otransfer solvers bench --seed``.
SEED = 0

#: Methods from the registry, never a hand-written list.
METHODS = solvers.available()

#: Per view, the largest size a method is timed at (0: not timed in that view), where one
#: solve would take most of a minute on 2 CPU cores. POT's Sinkhorn at reg = 0.01 of the cost
#: range needs ~7 x 10^4 iterations on the neuron view: 5-20 s already at d = 64, ~50 s at
#: d = 256; `otransfer solvers bench` compares it. Names the registry does not know are ignored.
MAX_SIZE = {"neurons": {"pot_sinkhorn": 0}}

# asv forks every benchmark from one server process that imported this module (launch_method
# "forkserver" in asv.conf.json): importing the methods' optional packages here (POT alone takes
# ~2 s) pays for them once instead of in every benchmark. Imports only: running a torch op
# before fork would start thread pools that the children inherit.
for _info in solvers.all_methods().values():
    if _info.is_available:
        for _module in _info.requires:
            importlib.import_module(_module)


class _View:
    """Benchmarks shared by the views; subclasses set ``view`` and ``params``."""

    view = ""
    param_names = ["method", "size"]
    # Explicit, so that editing this file keeps the history of unchanged benchmarks (asv would
    # otherwise version each benchmark by a hash of its source). Bump it when the problems or
    # the measured call change.
    version = "1"
    timeout = 600  # KeOps compiles its kernels in setup on first use (~20 s per formula)
    repeat = (1, 5, 10.0)  # 1 to 5 samples, stopping after 10 s: solves take up to ~10 s
    rounds = 1

    def setup(self, method, size):
        info = solvers.get_method(method)
        view = bench.VIEWS[self.view]
        problem = view.build(size, SEED)
        reason = bench.invalid_reason(info, problem)
        cap = MAX_SIZE.get(self.view, {}).get(method)
        if reason is None and cap is not None and size > cap:
            reason = (
                f"{method} is timed up to {view.size_name} = {cap} only (time budget)"
                if cap
                else f"{method} is not timed on the {self.view} view (too slow)"
            )
        if reason is not None:
            raise NotImplementedError(reason)
        # Lazy imports and KeOps compilation stay out of the timed call, also under --quick,
        # where asv does no warm-up of its own.
        bench.warm_up(info, self.view, SEED)
        self.info, self.problem = info, problem

    def time_solve(self, method, size):
        bench.run_once(self.info, self.problem)

    def time_solve_backward(self, method, size):
        bench.run_once(self.info, self.problem, backward=True)

    def track_relative_error(self, method, size):
        ref = bench.reference_method(self.problem)
        exact = float(bench.run_once(solvers.get_method(ref), self.problem).value)
        value = float(bench.run_once(self.info, self.problem).value)
        return abs(value - exact) / abs(exact)

    track_relative_error.unit = "relative error"

    def track_marginal_error(self, method, size):
        return bench.run_once(self.info, self.problem).marginal_error

    track_marginal_error.unit = "L1 marginal error"


class NeuronsView(_View):
    """li2020 neuron view: n = 64 examples, d neurons, euclidean cost."""

    view = "neurons"
    params = (METHODS, [64, 256, 1024])


class SamplesView(_View):
    """lohit2020 sample view: n examples, 256 features, cosine cost."""

    view = "samples"
    params = (METHODS, [16, 64, 256])
