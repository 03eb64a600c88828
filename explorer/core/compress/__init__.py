"""Compress: the Deep Compression stages after pruning (weight sharing by k-means, Huffman coding, archives)."""
