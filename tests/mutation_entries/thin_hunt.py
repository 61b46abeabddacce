"""Planted bugs in the modules that had the fewest per line: the built-in corpus, the tokenizer
files of a conversion, the TPU launcher and its flags, the checkpoint mapping and readers, the
released tokenizers, pretrained workdirs, splash, checksums, prepare, the Part B loss and the XLA
options."""
from mutation_entries import Mutation

_BC, _TF = "glmjax/data/builtin_corpus.py", "glmjax/convert/tokenizer_files.py"
_L, _FL = "launch/tpu.py", "launch/tpu_flags.py"
_MP, _OR = "glmjax/convert/mapping.py", "glmjax/convert/original.py"
_RT, _PT = "glmjax/data/released_tokenizers.py", "glmjax/pretrained.py"
_T = "glmjax/data/tokenizers.py"
_S, _CS, _PR = "glmjax/model/splash.py", "glmjax/checksums.py", "glmjax/data/prepare.py"
_LO, _X = "glmjax/loss.py", "glmjax/xla_options.py"
_CORPUS = ("tests/test_sources.py", "tests/test_data_inputs.py", "tests/test_prepare.py")
_CONV_TOK = ("tests/test_convert_tokenizer.py", "tests/test_convert_export.py")
_LAUNCH = ("tests/test_launch.py", "tests/test_launch_on_workers.py",
           "tests/test_launch_tpu_setup.py")
_MAP = ("tests/test_convert.py", "tests/test_convert_export.py", "tests/test_convert_refusals.py",
        "tests/test_original_glm_reference.py")
_TOK = ("tests/test_tokenizers.py", "tests/test_released_tokenizers.py",
        "tests/test_convert_tokenizer.py")
_PRE = ("tests/test_convert.py", "tests/test_reporting.py")
_SPL = ("tests/test_attention.py", "tests/test_dense_attention.py")
_CHK = ("tests/test_checkpoint_damage.py", "tests/test_device_snapshot.py")
_PREP = ("tests/test_prepare.py", "tests/test_prepare_resume.py")
_LOSS = ("tests/test_loss.py",)
_XLA = ("tests/test_xla_options.py",)

_PACK = ("tests/test_launch_tpu_setup.py::test_a_setup_whose_pack_fails_copies_nothing_and_"
         "leaves_no_half_archive",)
_USAGE = ("tests/test_launch.py::test_a_usage_error_is_one_line_naming_the_flag_with_exit_"
          "status_2",)
_GIVEN = ("tests/test_released_tokenizers.py::test_released_files_are_recognised_from_a_folder_"
          "or_a_file",)
_MERGES = ("tests/test_released_tokenizers.py::test_a_resume_sees_a_gpt2_tokenizer_whose_merges_"
           "txt_changed",)
_DONATED = ("tests/test_checkpoint_damage.py::test_the_checksummed_copy_of_a_state_outlives_the_"
            "state_being_donated_to_the_next_step",)
_TIED = ("tests/test_loss.py::test_a_top_logit_tied_across_vocabulary_shards_is_predicted_as_its_"
         "first_id",)

ENTRIES: tuple[Mutation, ...] = (
    # The built-in corpus.
    Mutation("a piece of the builtin corpus starts again at document 0", _BC,
             "return (document(i) for i in range(start, stop))",
             "return (document(i - start) for i in range(start, stop))", _CORPUS),
    Mutation("a builtin life story states an age one year short", _BC,
             "age of {p['died'] - p['born']}", "age of {p['died'] - p['born'] - 1}", _CORPUS),
    Mutation("the corpus's random numbers never reach their upper bound", _BC,
             "return low + self.below(high - low + 1)", "return low + self.below(high - low)",
             _CORPUS),
    Mutation("a builtin sum takes the wrong term away", _BC,
             "{a + b} minus {b} is {a}.", "{a + b} minus {a} is {a}.", _CORPUS),
    # Tokenizer files of a conversion.
    Mutation("an import copies only the tokenizer's main file (bpe: no merges.txt)", _TF,
             '  for file in found["files"]:\n', '  for file in found["files"][:1]:\n', _CONV_TOK),
    Mutation("an import points the workdir at the source's tokenizer instead of its copy", _TF,
             "tokenizer_path=os.path.join(TOKENIZER_DIR,\n"
             "                                                 "
             'os.path.basename(found["tokenizer_path"])))',
             'tokenizer_path=found["tokenizer_path"])', _CONV_TOK),
    Mutation("an export's tokenizer record leaves out the special-id layout", _TF,
             '"tokenizer_vocab": data.tokenizer_vocab,\n', '"tokenizer_vocab": "",\n',
             _CONV_TOK),
    Mutation("an export copies only the tokenizer's main file", _TF,
             "  for file in files:  # --out was empty",
             "  for file in files[:1]:  # --out was empty", _CONV_TOK),
    # The TPU launcher.
    Mutation("a failed pack leaves its half-written archive behind", _L,
             "    if os.path.exists(partial):\n      os.remove(partial)\n", "    pass\n", _PACK),
    Mutation("a pack that fails lets setup go on to copy", _L,
             '        print(f"launch/tpu.py: cannot pack the checkout: {error}", file=sys.stderr)\n'
             "        code = 1\n",
             '        print(f"launch/tpu.py: cannot pack the checkout: {error}", file=sys.stderr)\n'
             "        code = 0\n", _PACK),
    Mutation("a real train copies the forwarded variables to worker 0 only", _L,
             'scp(args, path, "all", SECRETS)', 'scp(args, path, 0, SECRETS)',
             ("tests/test_launch_on_workers.py::test_a_forwarded_variable_reaches_the_trainer_in_"
              "a_private_file_never_on_a_command_line",)),
    Mutation("--name is checked from its start only (glm_10b is taken)", _FL,
             'if not re.fullmatch(r"[a-z]([-a-z0-9]{0,61}[a-z0-9])?", args.name):',
             'if not re.match(r"[a-z]([-a-z0-9]{0,61}[a-z0-9])?", args.name):', _USAGE),
    Mutation("--mount-bucket=gs://BUCKET is taken for a bucket name", _FL,
             'not re.fullmatch(r"[a-z0-9][-_.a-z0-9]{1,220}", args.mount_bucket)',
             'not re.match(r"[a-z0-9][-_.a-z0-9]{1,220}", args.mount_bucket)', _USAGE),
    # The checkpoint mapping and the original readers.
    Mutation("an import swaps the position and block position tables", _MP,
             '    ("transformer.position_embeddings.weight", ("position_embeddings",)),\n'
             '    ("transformer.block_position_embeddings.weight", '
             '("block_position_embeddings",)),',
             '    ("transformer.position_embeddings.weight", ("block_position_embeddings",)),\n'
             '    ("transformer.block_position_embeddings.weight", ("position_embeddings",)),',
             _MAP),
    Mutation("an import swaps the input LayerNorm's scale and bias", _MP,
             '    ("input_layernorm.weight", ("input_layernorm", "scale")),\n'
             '    ("input_layernorm.bias", ("input_layernorm", "bias")),',
             '    ("input_layernorm.weight", ("input_layernorm", "bias")),\n'
             '    ("input_layernorm.bias", ("input_layernorm", "scale")),', _MAP),
    Mutation("an export ignores the imported checkpoint's dtypes", _MP,
             "return np.asarray(value).astype(dtypes[key]) if key in dtypes else "
             "np.asarray(value)",
             "return np.asarray(value)", _MAP),
    Mutation("DeepSpeed's latest file is not read", _OR,
             'for name in ("latest_checkpointed_iteration.txt", "latest"):',
             'for name in ("latest_checkpointed_iteration.txt",):', _MAP),
    Mutation("an export of a glm.-prefixed import writes its keys unprefixed", _OR,
             "named = {(PREFIX + key if prefixed else key): value",
             "named = {key: value", _MAP),
    # Released tokenizers and the tokenizers.
    Mutation("a prefixed merges.txt given is loaded from a plain vocab.json", _RT,
             'name[:-len("merges.txt")] + "vocab.json"', '"vocab.json"', _GIVEN),
    Mutation("a merges.txt given is read as a BERT vocab.txt", _RT,
             '(".model", "sentencepiece"), ("merges.txt", "bpe"), (".txt", "wordpiece"),',
             '(".model", "sentencepiece"), (".txt", "wordpiece"), ("merges.txt", "bpe"),',
             _TOK),
    Mutation("a BPE tokenizer's fingerprint ignores its merges.txt", _T,
             "both = file_fingerprint(vocab_path) + file_fingerprint(merges_path)",
             "both = file_fingerprint(vocab_path)", _MERGES),
    Mutation("the BERT WordPiece tokenizer keeps upper case", _T,
             "normalizers.BertNormalizer(lowercase=True)",
             "normalizers.BertNormalizer(lowercase=False)", _TOK),
    Mutation("the GPT-2 BPE tokenizer adds a space before a text", _T,
             "pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)",
             "pre_tokenizers.ByteLevel(add_prefix_space=True, use_regex=True)", _TOK),
    Mutation("a file tokenizer's decode drops the text after its last added id", _T,
             '    if run:\n      parts.append(self._decode_base(run))\n    return "".join(parts)',
             '    return "".join(parts)', _TOK),
    # Pretrained workdirs.
    Mutation("a workdir that does not fit this host's mesh loads replicated (fsdp=1)", _PT,
             "if count // slices % n == 0),\n                     reverse=True)",
             "if count // slices % n == 0),\n                     reverse=False)", _PRE),
    # Splash.
    Mutation("splash's dq pass reads the dkv pass's block metadata", _S,
             "return strip(fwd), strip(fwd), strip(dkv)",
             "return strip(fwd), strip(dkv), strip(dkv)", _SPL),
    Mutation("splash ignores the attention scale", _S,
             "scaled_q = q * jnp.asarray(scale, q.dtype)", "scaled_q = q", _SPL),
    # Checksums.
    Mutation("copy_with_summary hands back the state itself instead of a copy", _CS,
             "return jax.tree_util.tree_unflatten(treedef, copies), lambda",
             "return state, lambda", _DONATED),
    # Prepare.
    Mutation("prepare's closing flags leave out the tokenizer's special-id layout", _PR,
             "tokenizer_path=data_config.tokenizer_path,\n"
             "                tokenizer_vocab=data_config.tokenizer_vocab)",
             "tokenizer_path=data_config.tokenizer_path)", _PREP),
    # The Part B loss.
    Mutation("the loss_sum counts one data-parallel device's rows only", _LO,
             'loss_sum = over_rows(jnp.sum(carry["row_loss"]))',
             'loss_sum = jnp.sum(carry["row_loss"])', _LOSS),
    Mutation("the log-sum-exp takes this vocabulary shard's max as the whole row's", _LO,
             "top = over_vocab(jax.lax.pmax, local_max)", "top = local_max", _LOSS),
    Mutation("the argmax across vocabulary shards takes the last maximum", _LO,
             "predicted = over_vocab(jax.lax.pmin, first)",
             "predicted = over_vocab(jax.lax.pmax, jnp.where(local_max == top, first, -1))",
             _TIED),
    # XLA options.
    Mutation("a TPU program gets the GPU's compiler options", _X,
             "_BY_PLATFORM.get(platform, {}).items()", '_BY_PLATFORM["gpu"].items()', _XLA),
    Mutation("a known option with a wrong value is dropped rather than raised", _X,
             '    if "No such compile option" not in str(error):\n      raise\n', "", _XLA),
)
