"""The evaluation harnesses' side: a pruned model (an export file's model, pruner and schedule)
as a VLMEvalKit model (``vlmeval``: ``python -m paretobench.harnesses.vlmeval pick.json ...``)
and as an lmms-eval model with offline tasks over VLMEvalKit TSVs (``lmms_eval``:
``lmms-eval --model paretobench --model_args pick=pick.json``). Neither needs its harness to be
imported until it is used; both run in the harness environment (``make eval-env``)."""
