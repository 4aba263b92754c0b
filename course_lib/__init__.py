"""course_lib: the companion package of the course "How modern models see, hear and get smaller".

Each module teaches one idea of the lecture, in the order of the notebooks:

    patches      01  images -> patches -> ViT input embeddings
    shapes_data  02  seeded synthetic captioned images
    tiny_clip    02  a tiny open_clip CLIP trained contrastively (training, cache: tiny_clip_training)
    zero_shot    03  classifiers from label text, prompt ensembles, multiple choice
    tiny_lm      04  a small decoder-only language model
    connector    04  the LLaVA projector and the image/text splice (two-stage tuning: llava)
    video        05  sampling frames, a Perceiver resampler, the temporal aggregator
    video_io     05  writing and reading H.264 files with PyAV, keyframes and seeking
    video_clips  05  synthetic clips and a task that needs time
    audio        06  waveform -> log-mel features (Kaldi, Whisper, AST front ends: audio_variants)
    compression  07-09  quantization, pruning, distillation
    speculative  10  speculative decoding

Support modules: ``checks`` (instant feedback for exercises), ``widgets`` (interactive figures
that also render statically), ``runtime`` (seeds, cache directory), ``doctor`` (environment
check), ``student`` (student copies of the notebooks), ``nbtools`` (executing and cleaning
notebooks).

Shape notation, used in every docstring and shape comment of the package:

    B  batch size                    N  number of patches (tokens) per image
    C  channels                      P  patch size in pixels
    H  image height                  W  image width
    D  embedding width               K  number of classes
    L  text length in tokens         V  vocabulary size
    T  time: frames or steps         S  audio samples
    F  frequency bins (n_fft//2+1)   M  mel bands

Importing the package has no side effects; nothing in it prints.
"""

__version__ = "0.1.0"
