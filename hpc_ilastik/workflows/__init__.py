"""One short module per ilastik workflow, each the composition of domain steps plus its export sources,
behind `workflow.Workflow` (name, input roles, headless run); `headless.run_headless` dispatches on the
project's workflow name. What every workflow shares lives beside them: the typed options the command
line builds (`options`), lanes and inputs per role (`batch`), export settings, targets and fingerprints
(`export`), and the block-by-block run into the targets (`blockwise`).

May import everything below it (`project`, the domains, `run`, `io`); only the command line imports it.
"""
