"""Row 2 peer: the same dual encoder in PyTorch (Hugging Face transformers' ViTModel and
BertModel) with the weights of our model.safetensors, on the CPU, same thread count.

The image embedding is the CLS token of ViTModel's last (layer-normed) hidden state, the text
embedding the CLS token of BertModel's last hidden state, each through its projection
(`visual_projection`, `text_projection`, no bias) and L2-normalised: what cxr-search computes.
Inputs are the ones our bench wrote (--dump-dir): the same preprocessed image batch and the
same texts, tokenised by the same tokenizer.json with the same truncation. Prints images/s at
the batch size, texts/s (tokenisation included), and the max abs difference to our embeddings.

Texts are measured twice: as one batch padded to its longest text (`impl` "torch", what a plain
transformers call does), and in the groups cxr-search runs them in (`impl` "torch-grouped"):
sorted by token count, longest first, at most 8 to a group, each padded to its own longest, as
sentence-transformers' `encode` also sorts by length. The second is the fair peer of ours.

Usage: embed.py --model DIR --dump-dir DIR --threads N [--seconds S]
"""

import argparse
import json
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file
from tokenizers import Tokenizer
from transformers import BertConfig, BertModel, ViTConfig, ViTModel

from common import emit, log, read_f32, repeat_for

# Most texts padded together, as in cxr-search's DualEncoder::embed_texts (LENGTH_GROUP).
GROUP = 8


def sub_state(weights, prefix):
    return {k[len(prefix):]: v for k, v in weights.items() if k.startswith(prefix)}


class Towers(torch.nn.Module):
    def __init__(self, model_dir):
        super().__init__()
        cfg = json.loads((model_dir / "config.json").read_text())
        self.cfg = cfg
        vit = cfg["image"]["config"]
        bert = cfg["text"]["config"]
        self.vision = ViTModel(ViTConfig(
            hidden_size=vit["hidden_size"], num_hidden_layers=vit["num_hidden_layers"],
            num_attention_heads=vit["num_attention_heads"],
            intermediate_size=vit["intermediate_size"], hidden_act="gelu",
            layer_norm_eps=vit["layer_norm_eps"], image_size=vit["image_size"],
            patch_size=vit["patch_size"], num_channels=vit["num_channels"],
            qkv_bias=vit["qkv_bias"], hidden_dropout_prob=0.0,
            attention_probs_dropout_prob=0.0), add_pooling_layer=False)
        self.text = BertModel(BertConfig(
            vocab_size=bert["vocab_size"], hidden_size=bert["hidden_size"],
            num_hidden_layers=bert["num_hidden_layers"],
            num_attention_heads=bert["num_attention_heads"],
            intermediate_size=bert["intermediate_size"], hidden_act="gelu",
            max_position_embeddings=bert["max_position_embeddings"],
            type_vocab_size=bert["type_vocab_size"], layer_norm_eps=bert["layer_norm_eps"],
            pad_token_id=bert["pad_token_id"], hidden_dropout_prob=0.0,
            attention_probs_dropout_prob=0.0), add_pooling_layer=False)
        dim = cfg["embed_dim"]
        self.visual_projection = torch.nn.Linear(vit["hidden_size"], dim, bias=False)
        self.text_projection = torch.nn.Linear(bert["hidden_size"], dim, bias=False)
        w = load_file(str(model_dir / "model.safetensors"))
        for module, prefix in [(self.vision, "vision_model."), (self.text, "text_model."),
                               (self.visual_projection, "visual_projection."),
                               (self.text_projection, "text_projection.")]:
            missing, unexpected = module.load_state_dict(sub_state(w, prefix), strict=False)
            missing = [m for m in missing if not m.endswith("position_ids")]
            if missing or unexpected:
                raise SystemExit(f"{prefix}: missing {missing}, unexpected {unexpected}")
        self.eval()

    def images(self, pixels):
        cls = self.vision(pixel_values=pixels).last_hidden_state[:, 0]
        return torch.nn.functional.normalize(self.visual_projection(cls), dim=-1)

    def texts(self, ids, mask):
        cls = self.text(input_ids=ids, attention_mask=mask,
                        token_type_ids=torch.zeros_like(ids)).last_hidden_state[:, 0]
        return torch.nn.functional.normalize(self.text_projection(cls), dim=-1)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", required=True, type=Path)
    ap.add_argument("--dump-dir", required=True, type=Path)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--seconds", type=float, default=5.0)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    towers = Towers(a.model)
    cfg = towers.cfg
    size = cfg["image"]["preprocess"]["image_size"]
    chans = cfg["image"]["preprocess"]["channels"]
    dim = cfg["embed_dim"]
    pixels = torch.from_numpy(read_f32(a.dump_dir / "image_inputs.f32").reshape(-1, chans, size, size))
    batch = pixels.shape[0]
    texts = json.loads((a.dump_dir / "texts.json").read_text())
    tok = Tokenizer.from_file(str(a.model / "tokenizer.json"))
    tok.enable_truncation(cfg["text"]["max_len"])
    tok.enable_padding(pad_id=0, pad_token="[PAD]")

    def tokenize(batch=texts):
        enc = tok.encode_batch(batch)
        ids = torch.tensor([e.ids for e in enc], dtype=torch.long)
        mask = torch.tensor([e.attention_mask for e in enc], dtype=torch.long)
        return ids, mask

    def grouped():
        # Token counts first (no padding), then each group tokenised and padded on its own.
        tok.no_padding()
        lengths = [len(e.ids) for e in tok.encode_batch(texts)]
        tok.enable_padding(pad_id=0, pad_token="[PAD]")
        order = sorted(range(len(texts)), key=lambda i: -lengths[i])
        out = torch.empty(len(texts), dim)
        for g in range(0, len(order), GROUP):
            members = order[g:g + GROUP]
            out[members] = towers.texts(*tokenize([texts[i] for i in members]))
        return out

    with torch.inference_mode():
        img = towers.images(pixels).numpy()
        txt = towers.texts(*tokenize()).numpy()
        ours_img = read_f32(a.dump_dir / "image_embeddings.f32", dim)
        ours_txt = read_f32(a.dump_dir / "text_embeddings.f32", dim)
        img_diff = float(np.abs(img - ours_img).max())
        txt_diff = float(np.abs(txt - ours_txt).max())
        log(f"torch vs ours: max abs diff images {img_diff:.2e}, texts {txt_diff:.2e}")
        n, secs = repeat_for(a.seconds, 2, lambda: towers.images(pixels))
        emit(row="embed", impl="torch", what="images", batch=batch, threads=a.threads,
             items=n * batch, seconds=secs, per_s=n * batch / secs, max_abs_diff=img_diff)
        n, secs = repeat_for(a.seconds, 2, lambda: towers.texts(*tokenize()))
        emit(row="embed", impl="torch", what="texts", batch=len(texts), threads=a.threads,
             items=n * len(texts), seconds=secs, per_s=n * len(texts) / secs,
             max_abs_diff=txt_diff)
        grouped_diff = float(np.abs(grouped().numpy() - ours_txt).max())
        n, secs = repeat_for(a.seconds, 2, grouped)
        emit(row="embed", impl="torch-grouped", what="texts", batch=len(texts),
             threads=a.threads, items=n * len(texts), seconds=secs,
             per_s=n * len(texts) / secs, max_abs_diff=grouped_diff)


if __name__ == "__main__":
    main()
