import os

# litellm (imported by the reference server) must not try the network for its price map
os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
