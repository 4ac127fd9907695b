#!/usr/bin/env python3
"""Builds the checkpoint-parity fixtures in tests/fixtures/parity/.

For every public checkpoint layout that `DualEncoder::load` reads, this script builds a TINY
random-weight model with the reference Python implementation (transformers, open_clip + timm),
saves it in the layout's real on-disk form (config, weights, tokenizer files), and records what
the reference computes for a small non-square grey PNG and a few texts, preprocessing included
(the Hugging Face image processor, or open_clip's eval transform, applied to the PNG).

`tests/parity.rs` loads each folder with `DualEncoder::load` and compares.

Usage (versions pinned in tools/requirements-parity.txt):

    pip install -r tools/requirements-parity.txt
    python3 tools/make_parity_fixtures.py [--out tests/fixtures/parity]

Everything is seeded; running it twice writes the same numbers (the weight files of the
pickle-based layouts may differ in bytes, not in values).

reference.json of each folder:
  texts            the input texts
  text_ids         token ids the reference tokenizer produced (before padding)
  pixel_values     the preprocessed image, (channels, size, size) flattened
  image_embedding  projected image embedding, NOT normalised (what get_image_features returns)
  text_embeddings  projected text embeddings, NOT normalised
The engine stores the L2-normalised versions; the test checks both.
"""

import argparse
import json
import os
import shutil

import numpy as np
import torch
from PIL import Image

TEXTS = ["small left pleural effusion", "No pneumothorax.  Heart size is normal!"]

WORDS = (
    "small left right pleural effusion no pneumothorax heart size is normal "
    "cardiomegaly with pulmonary edema lower lobe consolidation mild bilateral "
    "opacity lung lungs clear there . , the of and"
).split()

CLIP_MEAN = [0.48145466, 0.4578275, 0.40821073]
CLIP_STD = [0.26862954, 0.26130258, 0.27577711]


def seed_all(seed):
    torch.manual_seed(seed)
    np.random.seed(seed)


def randomise(model, seed, scale=0.2):
    """Overwrites every float parameter and buffer-free weight with seeded noise.

    Fresh models have LayerNorm weights 1 and biases 0; noise everywhere makes the test fail
    when any tensor is loaded into the wrong place or not at all."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in sorted(model.named_parameters()):
            noise = torch.randn(p.shape, generator=g) * scale
            lname = name.lower()
            if ("norm" in lname or "layer_scale" in lname or name.endswith(".gamma")
                    or "ls1" in lname or "ls2" in lname) and not name.endswith("bias"):
                p.copy_(1.0 + noise)
            else:
                p.copy_(noise)


def make_image(path):
    """A 54x40 (width x height) grey image with structure: non-square, so resizing and cropping
    are exercised. At 32 px the resized width is 43, so the crop margin (11) is odd and the
    rounding of its offset matters (Hugging Face rounds down, torchvision half to even)."""
    w, h = 54, 40
    y, x = np.mgrid[0:h, 0:w]
    img = (120 + 80 * np.sin(x / 5.0) * np.cos(y / 7.0) + 1.5 * x - 1.0 * y).clip(0, 255)
    Image.fromarray(img.astype(np.uint8), mode="L").save(path)


def write_reference(out, texts, ids, pixel_values, image_emb, text_emb):
    ref = {
        "texts": texts,
        "text_ids": ids,
        "pixel_values": None if pixel_values is None else [round(float(v), 7) for v in pixel_values.flatten()],
        "image_embedding": None if image_emb is None else [float(v) for v in image_emb.flatten()],
        "text_embeddings": None if text_emb is None else [[float(v) for v in row] for row in text_emb],
    }
    with open(os.path.join(out, "reference.json"), "w") as f:
        json.dump(ref, f)


def fresh(path):
    shutil.rmtree(path, ignore_errors=True)
    os.makedirs(path)
    return path


def bert_vocab(path):
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + sorted(set(WORDS)) + ["##s", "##al"]
    with open(path, "w") as f:
        f.write("\n".join(vocab) + "\n")
    return len(vocab)


def bert_tokenizer(folder, max_len):
    from transformers import BertTokenizerFast

    n = bert_vocab(os.path.join(folder, "vocab.txt"))
    tok = BertTokenizerFast(vocab_file=os.path.join(folder, "vocab.txt"), do_lower_case=True,
                            model_max_length=max_len)
    tok.save_pretrained(folder)
    return tok, n


# ---------------------------------------------------------------------------------------------
# a. CLIP (HF CLIPModel; CheXzero after conversion to the HF layout)


def clip_tokenizer(folder):
    """A tiny byte-level BPE vocabulary in CLIP's form (256 byte symbols, the same with `</w>`,
    a few merges, <|startoftext|> and <|endoftext|> last so that EOS has the highest id)."""
    from transformers import CLIPTokenizerFast
    from transformers.models.clip.tokenization_clip import bytes_to_unicode

    chars = list(bytes_to_unicode().values())
    vocab = chars + [c + "</w>" for c in chars]
    merges = [("e", "f"), ("ef", "f"), ("l", "e"), ("le", "f"), ("n", "o</w>"), ("i", "s</w>"),
              ("a", "l"), ("a", "l</w>"), ("s", "m"), ("sm", "al</w>"), ("p", "le")]
    for a, b in merges:
        vocab.append(a + b)
    vocab += ["<|startoftext|>", "<|endoftext|>"]
    with open(os.path.join(folder, "vocab.json"), "w") as f:
        json.dump({t: i for i, t in enumerate(vocab)}, f)
    with open(os.path.join(folder, "merges.txt"), "w") as f:
        f.write("#version: 0.2\n" + "\n".join(f"{a} {b}" for a, b in merges) + "\n")
    tok = CLIPTokenizerFast(vocab_file=os.path.join(folder, "vocab.json"),
                            merges_file=os.path.join(folder, "merges.txt"), model_max_length=77)
    tok.save_pretrained(folder)
    os.remove(os.path.join(folder, "vocab.json"))
    os.remove(os.path.join(folder, "merges.txt"))
    return tok, len(vocab)


def make_clip(root, png):
    from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel

    out = fresh(os.path.join(root, "clip"))
    tok, vocab_size = clip_tokenizer(out)
    seed_all(1)
    cfg = CLIPConfig(
        text_config=dict(vocab_size=vocab_size, hidden_size=32, intermediate_size=64,
                         num_hidden_layers=2, num_attention_heads=2, max_position_embeddings=77,
                         hidden_act="quick_gelu", bos_token_id=vocab_size - 2,
                         eos_token_id=vocab_size - 1, pad_token_id=vocab_size - 1),
        vision_config=dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                           num_attention_heads=2, image_size=32, patch_size=8,
                           hidden_act="quick_gelu"),
        projection_dim=16,
    )
    model = CLIPModel(cfg).eval()
    randomise(model, 11)
    model.save_pretrained(out, safe_serialization=True)
    proc = CLIPImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32},
                              image_mean=CLIP_MEAN, image_std=CLIP_STD, resample=3)
    proc.save_pretrained(out)
    image = Image.open(png)
    pixels = proc(images=image, return_tensors="pt")["pixel_values"]
    enc = tok(TEXTS, padding=True, return_tensors="pt")
    with torch.no_grad():
        img = model.get_image_features(pixel_values=pixels)[0]
        txt = model.get_text_features(input_ids=enc["input_ids"], attention_mask=enc["attention_mask"])
    ids = [tok(t)["input_ids"] for t in TEXTS]
    write_reference(out, TEXTS, ids, pixels[0], img, txt)


# ---------------------------------------------------------------------------------------------
# b. SigLIP (HF SiglipModel)


def siglip_tokenizer(folder, max_len):
    """SigLIP publishes a SentencePiece unigram model (spiece.model) and no tokenizer.json;
    train a tiny one the same way (pad 0, </s> 1, unk 2, NFKC normaliser) and save it with
    transformers' SiglipTokenizer, which is also the reference tokenizer."""
    import io

    import sentencepiece as spm
    from transformers import SiglipTokenizer

    sentences = [" ".join(WORDS[i:] + WORDS[:i]) for i in range(len(WORDS))] + TEXTS
    buf = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(sentences), model_writer=buf, vocab_size=60,
        model_type="unigram", pad_id=0, eos_id=1, unk_id=2, bos_id=-1,
        pad_piece="<pad>", eos_piece="</s>", unk_piece="<unk>", hard_vocab_limit=False,
        minloglevel=2)
    path = os.path.join(folder, "spiece.model")
    with open(path, "wb") as f:
        f.write(buf.getvalue())
    tok = SiglipTokenizer(vocab_file=path, model_max_length=max_len)
    tok.save_pretrained(folder)
    return tok, tok.vocab_size


def make_siglip(root, png):
    from transformers import SiglipConfig, SiglipImageProcessor, SiglipModel

    out = fresh(os.path.join(root, "siglip"))
    max_len = 16
    tok, vocab_size = siglip_tokenizer(out, max_len)
    seed_all(2)
    cfg = SiglipConfig(
        text_config=dict(vocab_size=vocab_size, hidden_size=32, intermediate_size=64,
                         num_hidden_layers=2, num_attention_heads=2,
                         max_position_embeddings=max_len, pad_token_id=1, eos_token_id=1),
        vision_config=dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                           num_attention_heads=2, image_size=32, patch_size=8),
    )
    model = SiglipModel(cfg).eval()
    randomise(model, 12)
    model.save_pretrained(out, safe_serialization=True)
    proc = SiglipImageProcessor(size={"height": 32, "width": 32}, resample=3,
                                image_mean=[0.5, 0.5, 0.5], image_std=[0.5, 0.5, 0.5])
    proc.save_pretrained(out)
    pixels = proc(images=Image.open(png).convert("RGB"), return_tensors="pt")["pixel_values"]
    # SigLIP was trained on texts padded to max_length (with </s>), and pools the last position.
    enc = tok(TEXTS, padding="max_length", max_length=max_len, truncation=True, return_tensors="pt")
    with torch.no_grad():
        img = model.get_image_features(pixel_values=pixels)[0]
        txt = model.get_text_features(input_ids=enc["input_ids"])
    ids = [tok(t)["input_ids"] for t in TEXTS]
    write_reference(out, TEXTS, ids, pixels[0], img, txt)


# ---------------------------------------------------------------------------------------------
# c. BiomedCLIP (open_clip: timm ViT + HF BERT + projections)


def make_biomedclip(root, png):
    import open_clip
    import timm
    from open_clip.model import CustomTextCLIP
    from open_clip.transform import image_transform
    from timm.models import register_model
    from timm.models.vision_transformer import _create_vision_transformer
    from transformers import BertConfig

    out = fresh(os.path.join(root, "biomedclip"))
    # The text tower's HF config and tokenizer live in a scratch folder (BiomedCLIP names a hub
    # model there); only the tokenizer files are copied into the checkpoint folder, as on the hub.
    scratch = fresh(os.path.join(root, "_scratch_bert"))
    tok, vocab_size = bert_tokenizer(scratch, 32)
    # Head width 64 as in ViT-B/16 and BiomedBERT: the loader derives the head count from it.
    BertConfig(vocab_size=vocab_size, hidden_size=128, num_hidden_layers=2, num_attention_heads=2,
               intermediate_size=64, max_position_embeddings=32).save_pretrained(scratch)

    name = "vit_parity_tiny_patch8_32"
    if name not in timm.list_models():
        @register_model
        def vit_parity_tiny_patch8_32(pretrained=False, **kwargs):
            args = dict(img_size=32, patch_size=8, embed_dim=128, depth=2, num_heads=2,
                        mlp_ratio=0.5)
            return _create_vision_transformer(name, pretrained=pretrained, **dict(args, **kwargs))

    model_cfg = {
        "embed_dim": 16,
        "vision_cfg": {"timm_model_name": name, "timm_model_pretrained": False, "timm_pool": "",
                       "timm_proj": "linear", "image_size": 32},
        "text_cfg": {"hf_model_name": scratch, "hf_tokenizer_name": scratch,
                     "hf_model_pretrained": False, "hf_proj_type": "mlp",
                     "hf_pooler_type": "cls_last_hidden_state_pooler", "context_length": 32},
    }
    seed_all(3)
    model = CustomTextCLIP(**model_cfg).eval()
    randomise(model, 13)
    torch.save(model.state_dict(), os.path.join(out, "open_clip_pytorch_model.bin"))
    saved_cfg = json.loads(json.dumps(model_cfg))
    # As in BiomedCLIP's own file: the text tower names a hub model.
    saved_cfg["text_cfg"]["hf_model_name"] = "tiny-random-bert"
    saved_cfg["text_cfg"]["hf_tokenizer_name"] = "tiny-random-bert"
    del saved_cfg["text_cfg"]["hf_model_pretrained"]
    with open(os.path.join(out, "open_clip_config.json"), "w") as f:
        json.dump({"model_cfg": saved_cfg,
                   "preprocess_cfg": {"mean": CLIP_MEAN, "std": CLIP_STD}}, f, indent=2)
    for f in ["tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "vocab.txt"]:
        shutil.copy(os.path.join(scratch, f), out)

    transform = image_transform(32, is_train=False, mean=CLIP_MEAN, std=CLIP_STD)
    pixels = transform(Image.open(png)).unsqueeze(0)
    hf_tok = open_clip.tokenizer.HFTokenizer(scratch, context_length=32)
    with torch.no_grad():
        img = model.encode_image(pixels)[0]
        txt = model.encode_text(hf_tok(TEXTS))
    ids = [tok(t)["input_ids"] for t in TEXTS]
    write_reference(out, TEXTS, ids, pixels[0], img, txt)
    shutil.rmtree(scratch)


# ---------------------------------------------------------------------------------------------
# d. RAD-DINO (HF Dinov2Model, image only)


def make_dinov2(root, png):
    from transformers import BitImageProcessor, Dinov2Config, Dinov2Model

    out = fresh(os.path.join(root, "dinov2"))
    seed_all(4)
    cfg = Dinov2Config(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, mlp_ratio=2,
                       image_size=32, patch_size=8)
    model = Dinov2Model(cfg).eval()
    randomise(model, 14)
    model.save_pretrained(out, safe_serialization=True)
    # RAD-DINO's processor: resize the shorter side, centre-crop, bicubic, its own mean/std.
    # Here the resize (36) differs from the crop (32) so both steps matter.
    proc = BitImageProcessor(size={"shortest_edge": 36}, crop_size={"height": 32, "width": 32},
                             resample=3, do_center_crop=True,
                             image_mean=[0.5307, 0.5307, 0.5307], image_std=[0.2583, 0.2583, 0.2583])
    proc.save_pretrained(out)
    pixels = proc(images=Image.open(png), return_tensors="pt")["pixel_values"]
    with torch.no_grad():
        img = model(pixel_values=pixels).pooler_output[0]
    write_reference(out, [], [], pixels[0], img, None)


# ---------------------------------------------------------------------------------------------
# e. BERT text towers: plain BertModel (CLS) and CXR-BERT-specialized (CLS + projection head)


def make_bert(root, png):
    from transformers import BertConfig, BertModel

    out = fresh(os.path.join(root, "bert"))
    tok, vocab_size = bert_tokenizer(out, 32)
    seed_all(5)
    cfg = BertConfig(vocab_size=vocab_size, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                     intermediate_size=64, max_position_embeddings=32)
    model = BertModel(cfg).eval()
    randomise(model, 15)
    model.save_pretrained(out, safe_serialization=True)
    enc = tok(TEXTS, padding=True, return_tensors="pt")
    with torch.no_grad():
        txt = model(**enc).last_hidden_state[:, 0, :]
    ids = [tok(t)["input_ids"] for t in TEXTS]
    write_reference(out, TEXTS, ids, None, None, txt)


def cxr_bert_classes():
    """CXR-BERT-specialized (microsoft/BiomedVLP-CXR-BERT-specialized) ships its model class as
    remote code; this transcribes its structure: BertForMaskedLM plus `cls_projection_head`
    (dense_to_hidden -> activation -> LayerNorm -> dense_to_output) over the last layer's CLS
    token, L2-normalised by get_projected_text_embeddings."""
    from torch import nn
    from transformers import BertConfig, BertForMaskedLM
    from transformers.activations import ACT2FN

    class CXRBertConfig(BertConfig):
        model_type = "cxr-bert"

        def __init__(self, projection_size=128, **kwargs):
            super().__init__(**kwargs)
            self.projection_size = projection_size

    class BertProjectionHead(nn.Module):
        def __init__(self, config):
            super().__init__()
            self.dense_to_hidden = nn.Linear(config.hidden_size, config.projection_size)
            self.transform_act_fn = ACT2FN[config.hidden_act]
            self.LayerNorm = nn.LayerNorm(config.projection_size, eps=1e-12)
            self.dense_to_output = nn.Linear(config.projection_size, config.projection_size)

        def forward(self, x):
            return self.dense_to_output(self.LayerNorm(self.transform_act_fn(self.dense_to_hidden(x))))

    class CXRBertModel(BertForMaskedLM):
        config_class = CXRBertConfig

        def __init__(self, config):
            super().__init__(config)
            self.cls_projection_head = BertProjectionHead(config)
            self.post_init()

        def projected_cls(self, input_ids, attention_mask):
            out = super().forward(input_ids=input_ids, attention_mask=attention_mask,
                                  output_hidden_states=True, return_dict=True)
            return self.cls_projection_head(out.hidden_states[-1][:, 0, :])

    return CXRBertConfig, CXRBertModel


def make_cxr_bert(root, png):
    out = fresh(os.path.join(root, "cxr_bert"))
    tok, vocab_size = bert_tokenizer(out, 32)
    CXRBertConfig, CXRBertModel = cxr_bert_classes()
    seed_all(6)
    cfg = CXRBertConfig(vocab_size=vocab_size, hidden_size=32, num_hidden_layers=2,
                        num_attention_heads=2, intermediate_size=64, max_position_embeddings=32,
                        projection_size=16, architectures=["CXRBertModel"])
    model = CXRBertModel(cfg).eval()
    randomise(model, 16)
    # The hub checkpoint is a torch pickle (pytorch_model.bin): exercise that reader here.
    model.save_pretrained(out, safe_serialization=False)
    # As on the hub, the folder has vocab.txt and tokenizer_config.json but no tokenizer.json:
    # the engine builds the WordPiece tokenizer itself.
    os.remove(os.path.join(out, "tokenizer.json"))
    os.remove(os.path.join(out, "generation_config.json"))
    enc = tok(TEXTS, padding=True, return_tensors="pt")
    with torch.no_grad():
        txt = model.projected_cls(enc["input_ids"], enc["attention_mask"])
    ids = [tok(t)["input_ids"] for t in TEXTS]
    write_reference(out, TEXTS, ids, None, None, txt)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "..", "tests", "fixtures", "parity"))
    args = ap.parse_args()
    root = os.path.abspath(args.out)
    os.makedirs(root, exist_ok=True)
    torch.set_num_threads(1)
    png = os.path.join(root, "image.png")
    make_image(png)
    for make in [make_clip, make_siglip, make_biomedclip, make_dinov2, make_bert, make_cxr_bert]:
        make(root, png)
        print("wrote", make.__name__[5:])


if __name__ == "__main__":
    main()
