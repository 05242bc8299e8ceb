"""Small transformers models (random weights, no hub) shared by the frontend and backend tests."""

import torch


def gpt2():
    import transformers

    cfg = transformers.GPT2Config(vocab_size=128, n_positions=64, n_embd=64, n_layer=2, n_head=4, use_cache=False,
                                  bos_token_id=0, eos_token_id=0)
    return transformers.GPT2LMHeadModel(cfg), (torch.randint(0, 128, (2, 16)),)


def llama():
    import transformers

    cfg = transformers.LlamaConfig(vocab_size=128, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                                   num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64,
                                   use_cache=False)
    return transformers.LlamaForCausalLM(cfg), (torch.randint(0, 128, (2, 16)),)


def bert():
    import transformers

    cfg = transformers.BertConfig(vocab_size=128, hidden_size=64, num_hidden_layers=2, num_attention_heads=4,
                                  intermediate_size=128, max_position_embeddings=64)
    mask = torch.ones(2, 16, dtype=torch.long)
    mask[1, 12:] = 0  # padding in the second sequence
    return transformers.BertModel(cfg), (torch.randint(0, 128, (2, 16)), mask)


def main_output(out):
    """The tensor a test compares: logits, the last hidden state, or the first output."""
    if hasattr(out, "logits"):
        return out.logits
    if hasattr(out, "last_hidden_state"):
        return out.last_hidden_state
    return out[0] if isinstance(out, (tuple, list)) else out
