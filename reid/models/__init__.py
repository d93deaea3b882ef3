"""Networks: the backbone registry (torchvision, timm, IBN), the heads (ClassBlock, BNNeck, PCB) and build_model,
the feature contract (flip-sum, L2, conv+BN fusion), and the loader of the original repository's runs.
"""
