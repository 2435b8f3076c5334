"""A sample of points on the real MiniLM and SmolLM2-135M: exact counts, forward + backward, round trip."""

import numpy as np
import pytest
import torch
from peft import PeftModel

from autopeft.builders import BuildContext, build_adapter
from autopeft.models import get_base_model
from autopeft.space import SearchSpace, count_trainable_params
from autopeft.tuners.lofit.ranking import HeadRanking
from tests.test_builders import SPACES, adapter_params

pytestmark = pytest.mark.slow
POINTS = 2  # per space and model; the tiny-model tests cover hundreds


@pytest.fixture(scope="module", params=[("minilm", "classification"), ("smollm2-135m", "causal_lm")], ids=str)
def base(request):
    name, kind = request.param
    return get_base_model(name, kind, num_labels=2)


@pytest.mark.parametrize("space_name", ["autopeft", "lora", "unified"])
def test_sampled_points_on_real_models(base, space_name, tmp_path):
    config = base.config
    space = SearchSpace.from_file(SPACES / f"{space_name}.yaml", config)
    scores = torch.rand(config.num_hidden_layers, config.num_attention_heads,
                        generator=torch.Generator().manual_seed(0))
    context = BuildContext(head_ranking=HeadRanking.from_tensor(base.source.name, scores))
    tokens = base.tokenizer(["a short test sentence for the model", "another one"], return_tensors="pt",
                            padding=True)
    inputs = dict(tokens)
    inputs["labels"] = torch.tensor([0, 1]) if base.kind == "classification" else tokens["input_ids"].masked_fill(
        tokens["attention_mask"] == 0, -100)
    rng = np.random.default_rng(1)
    built = 0
    while built < POINTS:
        point = space.decode(space.sample(rng))
        if point.is_empty:
            continue
        model = build_adapter(point, config, base.kind, context)(base.fresh_copy(0))
        assert adapter_params(model) == count_trainable_params(point, config), point.describe()
        model.train()
        model(**inputs).loss.backward()
        with torch.no_grad():
            for p in model.parameters():
                if p.requires_grad:
                    p.add_(0.01 * torch.randn_like(p))
        model.eval()
        with torch.no_grad():
            expected = model(**inputs).logits
        folder = tmp_path / str(built)
        model.save_pretrained(folder)
        loaded = PeftModel.from_pretrained(base.fresh_copy(0), folder).eval()
        with torch.no_grad():
            assert (loaded(**inputs).logits - expected).abs().max() <= 1e-5, point.describe()
        built += 1
