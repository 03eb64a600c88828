"""Formats: the byte layouts of the model archives this app writes (``model.dcz``, ``model_sparse.npz``) and
the codecs they use (Huffman, relative indices), with their readers. Base level: loading a model reads them
back without the stages that write them (``compress.dcz``, ``deploy.sparse_archive``)."""
