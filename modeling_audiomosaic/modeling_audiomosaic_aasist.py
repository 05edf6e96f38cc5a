"""AASIST back-end of AudioMosaic's deepfake-detection classifier (`classifier_type="aasist"`), a sibling of
`modeling_audiomosaic.py` as transformers keeps large optional heads. The converter maps the authors' upstream names
(`LL`, `pos_S`, `GAT_layer_S`, `HtrgGAT_layer_ST11`, `pool_hS1`, `att_projM`, ...) to the names used here."""

import torch
import torch.nn.functional as F
from torch import nn

from .configuration_audiomosaic import AudioMosaicConfig


# AASIST back-end of AudioMosaic's ``AudioMosaicAASIST`` as a stand-alone head.
#
# Maps transformer tokens (B, 1+L, D) -- the last block's output including the cls token, with no
# final norm -- to 2-way logits. The layers follow clovaai/aasist ``models/AASIST.py`` as modified for
# SSL front ends (TakHemlata/SSL_Anti-spoofing), which is what the AudioMosaic authors vendored:
#
# * the SincConv front end is replaced by ``token_projection`` (upstream ``LL``), a per-token Linear(D -> 128), whose
#   output is read as a (128 "spectral" rows x (1+L) "temporal" columns) single-channel image;
# * no ``abs`` before the first 3x3 max-pool (upstream AASIST takes ``abs`` of the sinc filter output);
# * the residual blocks have no (1, 3) max-pool, so the encoder keeps the map size;
# * spectral / temporal node features come from a learned soft attention (``encoder_norm`` + ``attention``)
#   instead of max(|e|) over an axis;
# * ``spectral_position_embeddings`` (upstream ``pos_S``) has 42 spectral positions (= 128 // 3), so the spectral node
#   count is fixed, while the temporal node count follows the token count: (1+L) // 3.
#
# Deliberate upstream quirks reproduced here (they are part of the trained numerics):
#
# * ``ResidualBlock``: the pre-activation BN1 + SELU of the input is computed but ``conv1`` is applied to
#   the raw input, so the pre-activation has no effect on the output (see ``ResidualBlock.forward`` for
#   why BN1 still runs in training).
# * Graph attention maps are softmax-normalised over dim -2 (the *first* node index) and then used as
#   ``att @ x``, i.e. normalised over the "wrong" axis. Kept as is.
# * The heterogeneous layer uses ``att_weight12`` for both off-diagonal blocks; ``att_weight11`` scores
#   type-1 (temporal) pairs, ``att_weight22`` type-2 (spectral) pairs.
# * The learnable master nodes ``master1``/``master2`` (1, 1, 64) are passed un-expanded and broadcast
#   over the batch (upstream also builds batch-expanded copies that it never uses; not built here).
# * The authors' model also owns a 1000-way ``head`` and ``fc_norm`` that this back-end never uses; they
#   are deliberately absent here. ``num_classes`` is ignored upstream (always 2 outputs).
#
# Only eval-mode parity is checked against the authors' fixture; training mode keeps upstream's dropouts,
# ``drop_way`` and BatchNorm running-statistic updates, in upstream's order.
# AASIST constants used by AudioMosaicAASIST.
TOKEN_PROJECTION_DIM = 128  # token_projection output width = height of the (spectral x temporal) map
ENCODER_CHANNELS: list[tuple[int, int]] = [(1, 32), (32, 32), (32, 64), (64, 64), (64, 64), (64, 64)]
GAT_DIMS = (64, 32)
POOL_RATIO = 0.5
TEMPERATURE_GAT = 2.0     # spectral_graph_attention and temporal_graph_attention
TEMPERATURE_HS_GAL = 100.0  # all four HtrgGAT layers
GRAPH_POOL_DROPOUT = 0.3
GAT_INPUT_DROPOUT = 0.2
DROP_WAY_P = 0.2
READOUT_DROPOUT = 0.5
NUM_OUTPUTS = 2
FIRST_POOL = 3  # 3x3 max-pool right after token_projection


def _xavier_normal_column(rows: int) -> nn.Parameter:
    """An (rows, 1) attention weight vector, initialised like upstream's ``_init_new_params``."""
    weight = nn.Parameter(torch.empty(rows, 1))
    nn.init.xavier_normal_(weight)
    return weight


def _pairwise_products(x: torch.Tensor) -> torch.Tensor:
    """(B, N, C) -> (B, N, N, C) with [b, i, j] = x[b, i] * x[b, j] (the GAT edge features)."""
    return x.unsqueeze(2) * x.unsqueeze(1)


def _batch_norm_over_nodes(bn: nn.BatchNorm1d, x: torch.Tensor) -> torch.Tensor:
    """BatchNorm1d over every node of every sample: statistics are shared across batch and nodes."""
    return bn(x.reshape(-1, x.size(-1))).reshape(x.shape)


class AudioMosaicGraphAttentionLayer(nn.Module):
    """Homogeneous graph attention (GAT-S / GAT-T) on a fully connected graph of nodes."""

    def __init__(self, in_dim: int, out_dim: int, temperature: float) -> None:
        super().__init__()
        self.att_proj = nn.Linear(in_dim, out_dim)
        self.att_weight = _xavier_normal_column(out_dim)
        self.proj_with_att = nn.Linear(in_dim, out_dim)
        self.proj_without_att = nn.Linear(in_dim, out_dim)
        self.bn = nn.BatchNorm1d(out_dim)
        self.input_dropout = nn.Dropout(GAT_INPUT_DROPOUT)
        self.temperature = temperature

    def forward(self, nodes: torch.Tensor) -> torch.Tensor:
        """(B, N, in_dim) -> (B, N, out_dim)."""
        nodes = self.input_dropout(nodes)
        edge_scores = torch.tanh(self.att_proj(_pairwise_products(nodes))) @ self.att_weight
        # Upstream quirk: normalised over dim -2 (first node index), then used as att @ nodes.
        attention = F.softmax(edge_scores / self.temperature, dim=-2).squeeze(-1)  # (B, N, N)
        out = self.proj_with_att(attention @ nodes) + self.proj_without_att(nodes)
        return F.selu(_batch_norm_over_nodes(self.bn, out))


class AudioMosaicHeterogeneousGraphAttentionLayer(nn.Module):
    """HS-GAL: attention over the union of two node types (temporal, spectral) plus a master node.

    Called ``HtrgAudioMosaicGraphAttentionLayer`` upstream.
    """

    def __init__(self, in_dim: int, out_dim: int, temperature: float) -> None:
        super().__init__()
        # Registration order follows upstream so seeded initialisation consumes the RNG identically.
        self.proj_type1 = nn.Linear(in_dim, in_dim)
        self.proj_type2 = nn.Linear(in_dim, in_dim)
        self.att_proj = nn.Linear(in_dim, out_dim)
        self.att_proj_master = nn.Linear(in_dim, out_dim)
        self.att_weight11 = _xavier_normal_column(out_dim)
        self.att_weight22 = _xavier_normal_column(out_dim)
        self.att_weight12 = _xavier_normal_column(out_dim)
        self.att_weight_master = _xavier_normal_column(out_dim)
        self.proj_with_att = nn.Linear(in_dim, out_dim)
        self.proj_without_att = nn.Linear(in_dim, out_dim)
        self.proj_with_att_master = nn.Linear(in_dim, out_dim)
        self.proj_without_att_master = nn.Linear(in_dim, out_dim)
        self.bn = nn.BatchNorm1d(out_dim)
        self.input_dropout = nn.Dropout(GAT_INPUT_DROPOUT)
        self.temperature = temperature

    def forward(
        self, nodes_type1: torch.Tensor, nodes_type2: torch.Tensor, master: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(B, N1, in), (B, N2, in), master (1 or B, 1, in) -> (B, N1, out), (B, N2, out), (B, 1, out)."""
        num_type1 = nodes_type1.size(1)
        nodes = torch.cat([self.proj_type1(nodes_type1), self.proj_type2(nodes_type2)], dim=1)
        nodes = self.input_dropout(nodes)

        attention = self._node_attention(nodes, num_type1)
        master = self._update_master(nodes, master)

        out = self.proj_with_att(attention @ nodes) + self.proj_without_att(nodes)
        out = F.selu(_batch_norm_over_nodes(self.bn, out))
        return out[:, :num_type1], out[:, num_type1:], master

    def _node_attention(self, nodes: torch.Tensor, num_type1: int) -> torch.Tensor:
        """(B, N, C) -> (B, N, N) attention with a separate score vector per type pair."""
        edges = torch.tanh(self.att_proj(_pairwise_products(nodes)))  # (B, N, N, out)
        t1, t2 = slice(None, num_type1), slice(num_type1, None)
        # Block-wise scores, same sliced matmuls as upstream's in-place "att_board" fill.
        # Upstream quirk: att_weight12 scores both off-diagonal blocks.
        scores = torch.cat(
            [
                torch.cat([edges[:, t1, t1] @ self.att_weight11, edges[:, t1, t2] @ self.att_weight12], dim=2),
                torch.cat([edges[:, t2, t1] @ self.att_weight12, edges[:, t2, t2] @ self.att_weight22], dim=2),
            ],
            dim=1,
        )
        # Upstream quirk: softmax over dim -2 (first node index), see AudioMosaicGraphAttentionLayer.
        return F.softmax(scores / self.temperature, dim=-2).squeeze(-1)

    def _update_master(self, nodes: torch.Tensor, master: torch.Tensor) -> torch.Tensor:
        """Directed edges node -> master: attention-weighted node sum plus a master self-projection."""
        scores = torch.tanh(self.att_proj_master(nodes * master)) @ self.att_weight_master  # (B, N, 1)
        weights = F.softmax(scores / self.temperature, dim=-2)  # over nodes
        return self.proj_with_att_master(weights.transpose(1, 2) @ nodes) + self.proj_without_att_master(master)


class AudioMosaicGraphPool(nn.Module):
    """Keeps the top ``ratio`` share of nodes by a learned sigmoid score, scaling them by that score."""

    def __init__(self, ratio: float, in_dim: int, dropout: float) -> None:
        super().__init__()
        self.ratio = ratio
        self.proj = nn.Linear(in_dim, 1)
        self.score_dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()

    def forward(self, nodes: torch.Tensor) -> torch.Tensor:
        """(B, N, C) -> (B, max(int(N * ratio), 1), C), nodes ordered by descending score."""
        scores = torch.sigmoid(self.proj(self.score_dropout(nodes)))  # dropout only feeds the scorer
        num_kept = max(int(nodes.size(1) * self.ratio), 1)
        _, kept = torch.topk(scores, num_kept, dim=1)
        return torch.gather(nodes * scores, 1, kept.expand(-1, -1, nodes.size(2)))


class AudioMosaicResidualBlock(nn.Module):
    """RawNet2-style residual block without pooling (AudioMosaic dropped upstream's (1, 3) max-pool).

    conv 2x3 pad (1, 1) -> BN -> SELU -> conv 2x3 pad (0, 1): height +1 then -1, so the map size is
    preserved; a 1x3 conv projects the skip path when the channel count changes.
    """

    def __init__(self, in_channels: int, out_channels: int, first: bool = False) -> None:
        super().__init__()
        self.first = first
        if not first:
            # Pre-activation BN: its output is discarded upstream (see forward); it exists for the
            # checkpoint keys and its running statistics.
            self.bn1 = nn.BatchNorm2d(in_channels)
        self.conv1 = nn.Conv2d(in_channels, out_channels, kernel_size=(2, 3), padding=(1, 1))
        self.bn2 = nn.BatchNorm2d(out_channels)
        self.conv2 = nn.Conv2d(out_channels, out_channels, kernel_size=(2, 3), padding=(0, 1))
        self.conv_downsample: nn.Conv2d | None = None
        if in_channels != out_channels:
            self.conv_downsample = nn.Conv2d(in_channels, out_channels, kernel_size=(1, 3), padding=(0, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C_in, H, W) -> (B, C_out, H, W)."""
        if not self.first and self.training:
            # Upstream computes selu(bn1(x)) and throws it away (conv1 reads the raw x). The output never
            # depends on it, and bn1's weight/bias get no gradient upstream either, but in training the
            # BN forward updates running_mean/var and num_batches_tracked. Run it, without autograd and
            # without the (pointless) SELU, so the module's state after a training step equals upstream's.
            # In eval mode the call would have no effect at all, so it is skipped.
            with torch.no_grad():
                self.bn1(x)
        out = self.conv2(F.selu(self.bn2(self.conv1(x))))
        skip = x if self.conv_downsample is None else self.conv_downsample(x)
        return out + skip


class AudioMosaicAASISTHead(nn.Module):
    """AudioMosaicAASIST back-end (`classifier_type="aasist"`): takes the last block's tokens (B, 1+L, hidden_size),
    returns logits (B, 2). The head interface of `modeling_audiomosaic.AudioMosaicHead`: it reads ``"tokens"``,
    produces the logits itself (``num_outputs``) and never sees patch masking.

    Parameters and buffers are those of the authors' state dict (minus the unused ``head``/``fc_norm``), registered in
    the same order, under PEP 8 names: ``convert_official.KEY_RENAMES`` maps the upstream ones.
    """

    reads = "tokens"
    num_outputs = NUM_OUTPUTS
    training_patch_masking = False

    def __init__(self, config: AudioMosaicConfig) -> None:
        super().__init__()
        hidden_size = config.hidden_size
        gat_dim, hs_gal_dim = GAT_DIMS
        encoder_dim = ENCODER_CHANNELS[-1][1]
        num_spectral_nodes = TOKEN_PROJECTION_DIM // FIRST_POOL  # 42, fixed by token_projection's width

        # Registration order follows AudioMosaicAASIST.__init__ (same state-dict order and seeded init).
        self.token_projection = nn.Linear(hidden_size, TOKEN_PROJECTION_DIM)
        self.first_norm = nn.BatchNorm2d(1)
        self.encoder_norm = nn.BatchNorm2d(encoder_dim)
        self.readout_dropout = nn.Dropout(READOUT_DROPOUT)
        # "drop_way": independent dropout on each of the two HS-GAL branches before their element-wise max.
        self.drop_way = nn.Dropout(DROP_WAY_P)
        # nn.Sequential(nn.Sequential(block)) reproduces the authors' "encoder.{i}.0.*" key names.
        self.encoder = nn.Sequential(
            *[nn.Sequential(AudioMosaicResidualBlock(c_in, c_out, first=(i == 0)))
              for i, (c_in, c_out) in enumerate(ENCODER_CHANNELS)]
        )
        # Produces the logits of the spectral / temporal soft-attention pooling (keys attention.{0,2,3}).
        self.attention = nn.Sequential(
            nn.Conv2d(encoder_dim, 2 * encoder_dim, kernel_size=1),
            nn.SELU(),
            nn.BatchNorm2d(2 * encoder_dim),
            nn.Conv2d(2 * encoder_dim, encoder_dim, kernel_size=1),
        )
        self.spectral_position_embeddings = nn.Parameter(torch.randn(1, num_spectral_nodes, encoder_dim))
        self.master1 = nn.Parameter(torch.randn(1, 1, gat_dim))
        self.master2 = nn.Parameter(torch.randn(1, 1, gat_dim))

        self.spectral_graph_attention = AudioMosaicGraphAttentionLayer(encoder_dim, gat_dim, TEMPERATURE_GAT)
        self.temporal_graph_attention = AudioMosaicGraphAttentionLayer(encoder_dim, gat_dim, TEMPERATURE_GAT)
        self.hs_gal1_layer1 = AudioMosaicHeterogeneousGraphAttentionLayer(gat_dim, hs_gal_dim, TEMPERATURE_HS_GAL)
        self.hs_gal1_layer2 = AudioMosaicHeterogeneousGraphAttentionLayer(hs_gal_dim, hs_gal_dim, TEMPERATURE_HS_GAL)
        self.hs_gal2_layer1 = AudioMosaicHeterogeneousGraphAttentionLayer(gat_dim, hs_gal_dim, TEMPERATURE_HS_GAL)
        self.hs_gal2_layer2 = AudioMosaicHeterogeneousGraphAttentionLayer(hs_gal_dim, hs_gal_dim, TEMPERATURE_HS_GAL)

        self.spectral_pool = AudioMosaicGraphPool(POOL_RATIO, gat_dim, GRAPH_POOL_DROPOUT)
        self.temporal_pool = AudioMosaicGraphPool(POOL_RATIO, gat_dim, GRAPH_POOL_DROPOUT)
        self.hs_gal1_spectral_pool = AudioMosaicGraphPool(POOL_RATIO, hs_gal_dim, GRAPH_POOL_DROPOUT)
        self.hs_gal1_temporal_pool = AudioMosaicGraphPool(POOL_RATIO, hs_gal_dim, GRAPH_POOL_DROPOUT)
        self.hs_gal2_spectral_pool = AudioMosaicGraphPool(POOL_RATIO, hs_gal_dim, GRAPH_POOL_DROPOUT)
        self.hs_gal2_temporal_pool = AudioMosaicGraphPool(POOL_RATIO, hs_gal_dim, GRAPH_POOL_DROPOUT)

        # Readout: [max|T|, mean T, max|S|, mean S, master] -> 5 * 32 = 160.
        self.out_layer = nn.Linear(5 * hs_gal_dim, NUM_OUTPUTS)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        """tokens (B, 1+L, D), incl. cls, un-normalised -> logits (B, 2). Needs 1+L >= 3."""
        # Front end: per-token token_projection, read as a 1-channel (128 x (1+L)) image, 3x3 max-pool (no abs).
        x = self.token_projection(tokens).transpose(1, 2).unsqueeze(1)  # (B, 1, 128, 1+L)
        x = F.max_pool2d(x, (FIRST_POOL, FIRST_POOL))  # (B, 1, 42, (1+L)//3)
        x = F.selu(self.first_norm(x))
        x = F.selu(self.encoder_norm(self.encoder(x)))  # (B, 64, 42, T)

        attention_logits = self.attention(x)
        # Spectral nodes: soft-attention pooling over time, plus a learned per-row position embedding.
        spectral = (x * F.softmax(attention_logits, dim=-1)).sum(dim=-1).transpose(1, 2)
        spectral = spectral + self.spectral_position_embeddings
        spectral_nodes = self.spectral_pool(self.spectral_graph_attention(spectral))  # (B, 21, 64)
        # Temporal nodes: soft-attention pooling over the 42 spectral rows; node count follows L.
        temporal = (x * F.softmax(attention_logits, dim=-2)).sum(dim=-2).transpose(1, 2)
        temporal_nodes = self.temporal_pool(self.temporal_graph_attention(temporal))  # (B, T//2, 64)

        # Two parallel HS-GAL branches (same structure, own weights and master node).
        temporal1, spectral1, master1 = self._hs_gal_branch(
            temporal_nodes, spectral_nodes, self.master1, self.hs_gal1_layer1, self.hs_gal1_layer2,
            self.hs_gal1_spectral_pool, self.hs_gal1_temporal_pool)
        temporal2, spectral2, master2 = self._hs_gal_branch(
            temporal_nodes, spectral_nodes, self.master2, self.hs_gal2_layer1, self.hs_gal2_layer2,
            self.hs_gal2_spectral_pool, self.hs_gal2_temporal_pool)

        # drop_way in upstream's call order (T1, T2, S1, S2, m1, m2) so training draws the same masks.
        temporal1, temporal2 = self.drop_way(temporal1), self.drop_way(temporal2)
        spectral1, spectral2 = self.drop_way(spectral1), self.drop_way(spectral2)
        master1, master2 = self.drop_way(master1), self.drop_way(master2)
        temporal_nodes = torch.maximum(temporal1, temporal2)
        spectral_nodes = torch.maximum(spectral1, spectral2)
        master = torch.maximum(master1, master2)

        # max(dim).values (not amax) so ties back-propagate to a single node, as upstream.
        readout = torch.cat(
            [temporal_nodes.abs().max(dim=1).values, temporal_nodes.mean(dim=1),
             spectral_nodes.abs().max(dim=1).values, spectral_nodes.mean(dim=1), master.squeeze(1)],
            dim=1,
        )
        return self.out_layer(self.readout_dropout(readout))

    @staticmethod
    def _hs_gal_branch(
        temporal_nodes: torch.Tensor,
        spectral_nodes: torch.Tensor,
        master: torch.Tensor,
        first_layer: AudioMosaicHeterogeneousGraphAttentionLayer,
        second_layer: AudioMosaicHeterogeneousGraphAttentionLayer,
        pool_spectral: AudioMosaicGraphPool,
        pool_temporal: AudioMosaicGraphPool,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """HS-GAL -> graph pools (spectral first, as upstream) -> second HS-GAL added residually."""
        pooled_temporal, pooled_spectral, master = first_layer(temporal_nodes, spectral_nodes, master)
        pooled_spectral = pool_spectral(pooled_spectral)
        pooled_temporal = pool_temporal(pooled_temporal)
        update_temporal, update_spectral, aug_master = second_layer(pooled_temporal, pooled_spectral, master)
        return pooled_temporal + update_temporal, pooled_spectral + update_spectral, master + aug_master


__all__ = ["AudioMosaicAASISTHead", "AudioMosaicGraphAttentionLayer", "AudioMosaicHeterogeneousGraphAttentionLayer"]
