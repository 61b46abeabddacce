"""Planted bugs of the prose audit of the README's Quick start, Training for real, Using a
trained model, Benchmarks and Development sections: the table of shipped configs (shapes,
vocabularies, parameter counts, objectives, the :local variant) and export's GeLU warning."""
from mutation_entries import Mutation

_TABLE = ("tests/test_config.py::test_the_readme_s_table_of_configs_gives_their_shapes_parameter_"
          "counts_and_objectives",)
_GELU = ("tests/test_convert_export.py::test_a_model_computing_the_tanh_gelu_is_exported_with_a_"
         "warning_the_exact_one_without",)

ENTRIES: tuple[Mutation, ...] = (
    Mutation("GLM-2B ships half the heads the README's config table gives", "configs/glm_2b.py",
             "hidden_size=2048, num_layers=36, num_heads=32",
             "hidden_size=2048, num_layers=36, num_heads=16", _TABLE),
    Mutation("GLM-Base and GLM-Large take BERT's unpadded vocabulary of 30522", "glmjax/recipes.py",
             "vocab_size=30592, max_position=512", "vocab_size=30522, max_position=512", _TABLE),
    Mutation("export says nothing of the tanh GeLU the Hugging Face code does not compute",
             "glmjax/convert/__init__.py", 'if model_config.activation != "gelu_exact":',
             'if model_config.activation not in ("gelu_exact", "gelu_tanh"):', _GELU),
    Mutation("export refuses a gelu_tanh model rather than warning of it",
             "glmjax/convert/__init__.py",
             '"activation": tuple(name for name, _ in ACTIVATIONS.values())}',
             '"activation": ("gelu_exact",)}', _GELU),
    Mutation("the :local variant is three layers deep, not the two the README says",
             "glmjax/recipes.py", "hidden_size=128, num_layers=2, num_heads=4",
             "hidden_size=128, num_layers=3, num_heads=4", _TABLE),
)
