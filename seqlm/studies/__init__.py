"""Studies built from the core's parts, kept apart so the core stays generic.

Each module here composes the core packages (corpora_adapters, vocabularies, corpus,
model, training, evaluation, analysis, export) into one experiment; the core never
imports from here.

- `quickstart`: the whole pipeline on the bundled finch lesion data (`seqlm quickstart`);
- `quickstart_report`: its self-contained HTML page;
- `lesion`: the FinchGPT lesion comparison, pre vs post per group (`seqlm lesion`);
- `efficiency`: efficient-training methods against a fully decayed baseline over
  several seeds under one budget (`seqlm efficiency`).
"""
