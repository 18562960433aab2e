"""Pure ``@triton.jit`` code, one file per kernel family. Nothing here touches torch;
the launchers live in ``tritonn.ops``."""
