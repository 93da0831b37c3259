"""Generative models: built-in generators, C2PA provenance, watermarks, a synthetic-image detector.

The names resolve lazily (PEP 562): provenance and watermark checks import neither torch nor the
generators, so ``dlsec gen verify`` starts light.

Example:
    >>> from dlsec.generative import write_samples, verify_provenance
    >>> files = write_samples("zoo-gan", "out", n=2)                # doctest: +SKIP
    >>> verify_provenance(files[0].path).generator["name"]          # doctest: +SKIP
    'zoo-gan'
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from dlsec.lazy import resolve

if TYPE_CHECKING:
    from dlsec.generative._detect import (
        SYNTHETIC_DETECTORS,
        SpectrumDetector,
        SyntheticDetectorEntry,
        load_synthetic_detector,
        real_digits,
    )
    from dlsec.generative._gan import (
        GENERATORS,
        Generator,
        GeneratorEntry,
        generator_path,
        load_generator,
        register_generator,
        train_generator,
    )
    from dlsec.generative._learned import (
        LearnedWatermark,
        LearnedWatermarkEntry,
        load_learned_watermark,
    )
    from dlsec.generative._monitor import SyntheticImageDetector, window_images
    from dlsec.generative._provenance import (
        DIGITAL_SOURCE_TYPE,
        ContentTamperedError,
        GeneratorInfo,
        InvalidManifestError,
        ManifestMissingError,
        ProvenanceError,
        ProvenanceReport,
        UntrustedSignerError,
        c2pa_key_dir,
        c2pa_signer_info,
        ensure_c2pa_signer,
        new_c2pa_chain,
        rotate_c2pa_signer,
        sign_image,
        trust_c2pa_root,
        verify_provenance,
    )
    from dlsec.generative._robustness import (
        WATERMARK_EDITS,
        WatermarkEdit,
        psnr,
        register_watermark_edit,
        watermark_robustness,
    )
    from dlsec.generative._sample import (
        SampleFile,
        read_rgb,
        render_png,
        signed_samples,
        to_rgb,
        write_samples,
    )
    from dlsec.generative._watermark import (
        WATERMARK_METHODS,
        DwtDctWatermark,
        WatermarkCapacityError,
        WatermarkMethod,
        WatermarkMissingError,
        bit_accuracy,
        detect_watermark,
        embed_watermark,
        get_watermark,
        message_bits,
        watermark_capacity,
    )

_EXPORTS = {
    **dict.fromkeys(
        [
            "GENERATORS",
            "Generator",
            "GeneratorEntry",
            "generator_path",
            "load_generator",
            "register_generator",
            "train_generator",
        ],
        "_gan",
    ),
    **dict.fromkeys(
        [
            "DIGITAL_SOURCE_TYPE",
            "ContentTamperedError",
            "GeneratorInfo",
            "InvalidManifestError",
            "ManifestMissingError",
            "ProvenanceError",
            "ProvenanceReport",
            "UntrustedSignerError",
            "c2pa_key_dir",
            "c2pa_signer_info",
            "ensure_c2pa_signer",
            "new_c2pa_chain",
            "rotate_c2pa_signer",
            "sign_image",
            "trust_c2pa_root",
            "verify_provenance",
        ],
        "_provenance",
    ),
    **dict.fromkeys(
        [
            "SYNTHETIC_DETECTORS",
            "SpectrumDetector",
            "SyntheticDetectorEntry",
            "load_synthetic_detector",
            "real_digits",
        ],
        "_detect",
    ),
    **dict.fromkeys(["SyntheticImageDetector", "window_images"], "_monitor"),
    **dict.fromkeys(["LearnedWatermark", "LearnedWatermarkEntry", "load_learned_watermark"], "_learned"),
    **dict.fromkeys(
        ["WATERMARK_EDITS", "WatermarkEdit", "psnr", "register_watermark_edit", "watermark_robustness"],
        "_robustness",
    ),
    **dict.fromkeys(
        [
            "SampleFile",
            "assemble_png",
            "png_chunks",
            "read_rgb",
            "render_png",
            "signed_samples",
            "to_rgb",
            "write_samples",
        ],
        "_sample",
    ),
    **dict.fromkeys(
        [
            "WATERMARK_METHODS",
            "DwtDctWatermark",
            "WatermarkCapacityError",
            "WatermarkMethod",
            "WatermarkMissingError",
            "bit_accuracy",
            "detect_watermark",
            "embed_watermark",
            "get_watermark",
            "message_bits",
            "watermark_capacity",
        ],
        "_watermark",
    ),
}

__all__ = [
    "ContentTamperedError",
    "DIGITAL_SOURCE_TYPE",
    "DwtDctWatermark",
    "LearnedWatermark",
    "LearnedWatermarkEntry",
    "SYNTHETIC_DETECTORS",
    "SpectrumDetector",
    "SyntheticDetectorEntry",
    "SyntheticImageDetector",
    "WATERMARK_METHODS",
    "WatermarkMethod",
    "get_watermark",
    "load_learned_watermark",
    "load_synthetic_detector",
    "real_digits",
    "GENERATORS",
    "Generator",
    "GeneratorEntry",
    "GeneratorInfo",
    "InvalidManifestError",
    "ManifestMissingError",
    "ProvenanceError",
    "ProvenanceReport",
    "SampleFile",
    "assemble_png",
    "png_chunks",
    "UntrustedSignerError",
    "WatermarkCapacityError",
    "WatermarkMissingError",
    "bit_accuracy",
    "c2pa_key_dir",
    "c2pa_signer_info",
    "rotate_c2pa_signer",
    "trust_c2pa_root",
    "detect_watermark",
    "embed_watermark",
    "ensure_c2pa_signer",
    "generator_path",
    "load_generator",
    "message_bits",
    "new_c2pa_chain",
    "read_rgb",
    "register_generator",
    "render_png",
    "sign_image",
    "to_rgb",
    "train_generator",
    "verify_provenance",
    "watermark_capacity",
    "window_images",
    "signed_samples",
    "write_samples",
    "WATERMARK_EDITS",
    "WatermarkEdit",
    "psnr",
    "register_watermark_edit",
    "watermark_robustness",
]


def __getattr__(name: str) -> Any:
    return resolve(globals(), __name__, _EXPORTS, name)
