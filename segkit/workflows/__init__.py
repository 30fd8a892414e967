"""The jobs a user runs, composed from segkit's data, models, losses and metrics: train, evaluate, predict, compare, export.

One module per job; the functions are `segkit.train`, `segkit.evaluate`, `segkit.predict`,
`segkit.compare` and `segkit.export` (each defined in the module of the same name here).
`loading` brings a trained model back from a run folder or a .keras file for all of them.
`video` is `segkit.predict` for video files: frames streamed through the model into an overlay video.
Training's parts: `finetune` (model.init_from, the frozen-encoder warm-up), `tensorboard` (what TensorBoard shows).
"""
