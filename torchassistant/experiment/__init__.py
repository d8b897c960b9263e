"""The experiment layer: many runs of one spec. A sweep spec and its search space (`sweeps`), the study
that many processes and machines share (`study`, on Optuna), and tables over finished runs (`compare`).

May import every layer below (spec, session, run, assembly, report), never the command line.
"""
