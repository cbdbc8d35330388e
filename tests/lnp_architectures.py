"""Architecture families for the LNP sweep: tiny random models as users bring them, and their expected route.

Each entry builds ``(model, inputs, output)`` in float64: a transformers model from a tiny config
(random weights, nothing downloaded), a torchvision / timm model when installed, or a pattern
written out (LoRA). ``inputs`` is what the user passes (a dict for transformers models),
``output`` the ``output=`` selector (``None``: the tensor or its ``.logits``). ``expect`` is the
route ``measure_lnp(backend="auto")`` must take: ``"hooks"``, ``"vmap"``, or a regex of the
refusal. ``tools/lnp_coverage_table.py`` prints the table of docs/lnp.md from this list, and the
sweep test (``tests/test_torch_lnp_architectures.py``) checks every entry against the oracle.
"""
from __future__ import annotations

import dataclasses
from collections.abc import Callable

import torch
from torch import nn

V, T, H = 16, 4, 8  # vocabulary, tokens, hidden width


@dataclasses.dataclass(frozen=True)
class Arch:
    family: str
    build: Callable
    expect: str
    needs: str = "transformers"
    train: bool = False  # measured in training mode (dropout 0 in the config)
    run_here: bool = True  # False: written for an optional package absent from the shared venv, not yet run


def _g(seed=1):
    return torch.Generator().manual_seed(seed)


def _ids(n, seed=1):
    ids = torch.randint(1, V, (n, T), generator=_g(seed))
    mask = torch.ones(n, T, dtype=torch.long)
    mask[-1, -1] = 0  # one padded position: masks must travel with their samples
    return ids, mask


def _tf():
    import transformers

    return transformers


def _lm(cls_name, cfg_name, **cfg):
    def build(n):
        tf = _tf()
        torch.manual_seed(0)
        config = getattr(tf, cfg_name)(vocab_size=V, hidden_size=H, num_hidden_layers=1, num_attention_heads=2,
                                       intermediate_size=12, max_position_embeddings=16, use_cache=False, **cfg)
        model = getattr(tf, cls_name)(config).double()
        ids, mask = _ids(n)
        return model, {"input_ids": ids, "attention_mask": mask}, None
    return build


def _bert(n):
    tf = _tf()
    torch.manual_seed(0)
    cfg = tf.BertConfig(vocab_size=V, hidden_size=H, num_hidden_layers=1, num_attention_heads=2, intermediate_size=12,
                        max_position_embeddings=16, num_labels=3, hidden_dropout_prob=0.0,
                        attention_probs_dropout_prob=0.0)
    ids, mask = _ids(n)
    return tf.BertForSequenceClassification(cfg).double(), {"input_ids": ids, "attention_mask": mask,
                                                             "token_type_ids": torch.zeros_like(ids)}, None


def _gpt2(n):
    tf = _tf()
    torch.manual_seed(0)
    cfg = tf.GPT2Config(vocab_size=V, n_positions=16, n_embd=H, n_layer=1, n_head=2, resid_pdrop=0.0,
                        embd_pdrop=0.0, attn_pdrop=0.0, use_cache=False)
    ids, mask = _ids(n)
    return tf.GPT2LMHeadModel(cfg).double(), {"input_ids": ids, "attention_mask": mask}, None


def _opt(n):
    tf = _tf()
    torch.manual_seed(0)
    cfg = tf.OPTConfig(vocab_size=V, hidden_size=H, num_hidden_layers=1, num_attention_heads=2, ffn_dim=12,
                       max_position_embeddings=16, word_embed_proj_dim=H, dropout=0.0, attention_dropout=0.0,
                       use_cache=False)
    ids, mask = _ids(n)
    return tf.OPTForCausalLM(cfg).double(), {"input_ids": ids, "attention_mask": mask}, None


def _mixtral(n):
    tf = _tf()
    torch.manual_seed(0)
    cfg = tf.MixtralConfig(vocab_size=V, hidden_size=H, num_hidden_layers=1, num_attention_heads=2,
                           num_key_value_heads=1, intermediate_size=12, max_position_embeddings=16,
                           num_local_experts=2, num_experts_per_tok=1, use_cache=False,
                           experts_implementation="eager")
    ids, mask = _ids(n)
    return tf.MixtralForCausalLM(cfg).double(), {"input_ids": ids, "attention_mask": mask}, None


def _t5(n):
    tf = _tf()
    torch.manual_seed(0)
    cfg = tf.T5Config(vocab_size=V, d_model=H, d_kv=4, d_ff=12, num_layers=1, num_decoder_layers=1, num_heads=2,
                      dropout_rate=0.0, use_cache=False, decoder_start_token_id=0)
    ids, mask = _ids(n)
    dec = torch.randint(1, V, (n, 3), generator=_g(2))
    return tf.T5ForConditionalGeneration(cfg).double(), {"input_ids": ids, "attention_mask": mask,
                                                          "decoder_input_ids": dec}, None


def _bart(n):
    tf = _tf()
    torch.manual_seed(0)
    cfg = tf.BartConfig(vocab_size=V, d_model=H, encoder_layers=1, decoder_layers=1, encoder_attention_heads=2,
                        decoder_attention_heads=2, encoder_ffn_dim=12, decoder_ffn_dim=12, max_position_embeddings=16,
                        dropout=0.0, attention_dropout=0.0, activation_dropout=0.0, use_cache=False)
    ids, mask = _ids(n)
    dec = torch.randint(1, V, (n, 3), generator=_g(2))
    return tf.BartForConditionalGeneration(cfg).double(), {"input_ids": ids, "attention_mask": mask,
                                                            "decoder_input_ids": dec}, None


def _pixels(n, c=3, s=8):
    return torch.randn(n, c, s, s, generator=_g(3), dtype=torch.float64)


def _vit(n):
    tf = _tf()
    torch.manual_seed(0)
    cfg = tf.ViTConfig(image_size=8, patch_size=4, num_channels=3, hidden_size=H, num_hidden_layers=1,
                       num_attention_heads=2, intermediate_size=12, num_labels=3, hidden_dropout_prob=0.0,
                       attention_probs_dropout_prob=0.0)
    return tf.ViTForImageClassification(cfg).double(), {"pixel_values": _pixels(n)}, None


def _convnext(n):
    tf = _tf()
    torch.manual_seed(0)
    cfg = tf.ConvNextConfig(num_channels=3, patch_size=2, num_stages=2, hidden_sizes=[4, 8], depths=[1, 1],
                            num_labels=3, image_size=8)
    return tf.ConvNextForImageClassification(cfg).double(), {"pixel_values": _pixels(n)}, None


def _resnet(n):
    tf = _tf()
    torch.manual_seed(0)
    cfg = tf.ResNetConfig(num_channels=3, embedding_size=4, hidden_sizes=[4, 8], depths=[1, 1], layer_type="basic",
                          num_labels=3)
    return tf.ResNetForImageClassification(cfg).double(), {"pixel_values": _pixels(n, s=16)}, None


def _vitmae(n, noise=True):
    tf = _tf()
    torch.manual_seed(0)
    cfg = tf.ViTMAEConfig(image_size=8, patch_size=4, num_channels=1, hidden_size=H, num_hidden_layers=1,
                          num_attention_heads=2, intermediate_size=12, decoder_hidden_size=H,
                          decoder_num_hidden_layers=1, decoder_num_attention_heads=2, decoder_intermediate_size=12,
                          mask_ratio=0.5, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    inputs = {"pixel_values": _pixels(n, c=1)}
    if noise:  # the random masking's noise as an input: the forward is then deterministic
        inputs["noise"] = torch.rand(n, 4, generator=_g(4), dtype=torch.float64)
    return tf.ViTMAEForPreTraining(cfg).double(), inputs, None


def _wav2vec2(n, train=False):
    tf = _tf()
    torch.manual_seed(0)
    cfg = tf.Wav2Vec2Config(vocab_size=V, hidden_size=H, num_hidden_layers=1, num_attention_heads=2,
                            intermediate_size=12, conv_dim=(4, 4), conv_stride=(2, 2), conv_kernel=(3, 3),
                            num_conv_pos_embeddings=4, num_conv_pos_embedding_groups=2, hidden_dropout=0.0,
                            attention_dropout=0.0, activation_dropout=0.0, feat_proj_dropout=0.0, layerdrop=0.0,
                            mask_time_prob=0.5, mask_time_length=2, mask_time_min_masks=1)
    model = tf.Wav2Vec2ForCTC(cfg).double()
    if not train:  # SpecAugment's mask embedding is used in training mode only: frozen for eval
        model.wav2vec2.masked_spec_embed.requires_grad_(False)
    x = torch.randn(n, 40, generator=_g(5), dtype=torch.float64)
    return (model.train() if train else model), {"input_values": x}, None


def _whisper(n):
    tf = _tf()
    torch.manual_seed(0)
    cfg = tf.WhisperConfig(vocab_size=V, num_mel_bins=4, d_model=H, encoder_layers=1, decoder_layers=1,
                           encoder_attention_heads=2, decoder_attention_heads=2, encoder_ffn_dim=12,
                           decoder_ffn_dim=12, max_source_positions=4, max_target_positions=8, dropout=0.0,
                           use_cache=False, decoder_start_token_id=0, pad_token_id=0)
    feats = torch.randn(n, 4, 8, generator=_g(6), dtype=torch.float64)
    dec = torch.randint(1, V, (n, 3), generator=_g(2))
    return tf.WhisperForConditionalGeneration(cfg).double(), {"input_features": feats, "decoder_input_ids": dec}, None


class LoRALinear(nn.Linear):
    """peft's pattern: a frozen base Linear plus a trainable low-rank update B(A(x)), forward overridden."""

    def __init__(self, i, o, r=2):
        super().__init__(i, o)
        self.weight.requires_grad_(False)
        self.bias.requires_grad_(False)
        self.lora_a, self.lora_b = nn.Linear(i, r, bias=False), nn.Linear(r, o, bias=False)
        nn.init.normal_(self.lora_b.weight)

    def forward(self, x):
        return super().forward(x) + 0.5 * self.lora_b(self.lora_a(x))


def _lora(n):
    torch.manual_seed(0)
    model = nn.Sequential(LoRALinear(6, 8), nn.Tanh(), LoRALinear(8, 3)).double()
    return model, torch.randn(n, 6, generator=_g(7), dtype=torch.float64), None


def _torchvision_resnet(n):
    import torchvision

    torch.manual_seed(0)
    model = torchvision.models.resnet18(num_classes=3).double()
    for name, p in model.named_parameters():  # the oracle's J stays small: the last block and the head
        p.requires_grad_(name.startswith(("layer4.1", "fc")))
    return model, _pixels(n, s=32), None


def _timm_vit(n):
    import timm

    torch.manual_seed(0)
    model = timm.create_model("vit_tiny_patch16_224", pretrained=False, img_size=16, patch_size=8, embed_dim=8,
                              depth=1, num_heads=2, num_classes=3).double()
    return model, _pixels(n, s=16), None


def _timm_convnext(n):
    import timm

    torch.manual_seed(0)
    model = timm.create_model("convnext_atto", pretrained=False, num_classes=3, dims=(4, 8, 8, 8),
                              depths=(1, 1, 1, 1)).double()
    return model, _pixels(n, s=32), None


ARCHITECTURES = {
    "bert-seq-classification": Arch("HF encoder", _bert, "hooks"),
    "gpt2-lm": Arch("HF decoder", _gpt2, "hooks"),
    "llama-lm": Arch("HF decoder", _lm("LlamaForCausalLM", "LlamaConfig", num_key_value_heads=1), "hooks"),
    "qwen2-lm": Arch("HF decoder", _lm("Qwen2ForCausalLM", "Qwen2Config", num_key_value_heads=1), "hooks"),
    "gemma-lm": Arch("HF decoder", _lm("GemmaForCausalLM", "GemmaConfig", num_key_value_heads=1, head_dim=4),
                     "vmap"),
    "opt-lm": Arch("HF decoder", _opt, "vmap"),
    "mixtral-moe": Arch("HF mixture of experts", _mixtral, "vmap"),
    "t5-seq2seq": Arch("HF encoder-decoder", _t5, "vmap"),
    "bart-seq2seq": Arch("HF encoder-decoder", _bart, "vmap"),
    "vit-classification": Arch("HF vision", _vit, "hooks"),
    "convnext-classification": Arch("HF vision", _convnext, "vmap"),
    "resnet-classification": Arch("HF vision", _resnet, "hooks"),
    "vitmae-pretraining-noise-given": Arch("HF vision", _vitmae, "vmap"),
    "vitmae-pretraining-random-mask": Arch("HF vision", lambda n: _vitmae(n, noise=False), r"draws random numbers"),
    "wav2vec2-ctc-eval": Arch("HF audio", _wav2vec2, "vmap"),
    "wav2vec2-ctc-train-specaugment": Arch("HF audio", lambda n: _wav2vec2(n, train=True),
                                           r"model\.eval\(\)", train=True),
    "whisper-seq2seq": Arch("HF audio", _whisper, "vmap"),
    "lora-linear": Arch("LoRA (peft's pattern, written out)", _lora, "hooks", needs=""),
    "torchvision-resnet18": Arch("torchvision CNN", _torchvision_resnet, "hooks", needs="torchvision", run_here=False),
    "timm-vit": Arch("timm ViT", _timm_vit, "hooks", needs="timm", run_here=False),
    "timm-convnext": Arch("timm CNN", _timm_convnext, "vmap", needs="timm", run_here=False),
}
