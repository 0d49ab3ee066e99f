"""Standalone loaders shipped inside exported models (`python -m platform.export`), one per method whose
result is not a plain transformers model, named by that method: `dqlora.py` (the Whisper-encoder CTC student),
`dq_whisper.py` (the packed quantised student), `llm_adaptor.py` (encoder + adaptor + LLM).

Each file here is copied, as it is, into the export folders of results that are not plain transformers
models, so people can load them without this project: they import only numpy, torch, safetensors and
transformers, never another module of the project. The project loads the same formats with the same files.
"""
