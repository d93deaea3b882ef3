"""Data: image files and split folders, the dataset layouts (one module each) and the prepared folder they become,
the transforms, the decode-once cache, the P x K sampler, DG-Market, and the generated stand-in data.
"""
