"""GLSL of the RGB atlas renderer (``rgb_atlas``): pyrender's metallic-roughness shading
(``pyrender/shaders/mesh.frag``: same BRDF terms, constants and gamma) in the camera frame,
with the glTF alpha modes, COLOR_0 on the base colour and occlusion on the ambient term.

Textures are sampled (mipmapped, filtered) as stored and decoded from sRGB afterwards,
as pyrender does: sRGB textures would filter in linear light, visibly brighter on a
minified checker (31 dB against pyrender instead of 61 dB).

Speed on llvmpipe (the fragment shader is most of the cost; it runs every line for all
pixels of a SIMD group, branches included): one program per feature set (``features``:
which textures, MASK, double-sided; ``#define``s, compiled on first use), so a material
pays only for what it has; the light loop has a constant count and the per-pixel terms
are computed once outside it; Schlick's power of 5 is multiplied out; ``discard`` exists
only in the MASK variant (a shader that may discard turns off the early depth test).
Degenerate vertex normals are replaced on the CPU (``pbr_material``), not here.
"""

VERT = """
#version 330 core
layout(location = 0) in vec3 position;
layout(location = 1) in vec3 normal;
layout(location = 2) in vec2 texcoord;
layout(location = 3) in vec4 color;
uniform mat4 modelview;
uniform mat3 normal_matrix;
uniform mat4 projection;
out vec3 v_pos;
out vec3 v_nrm;
out vec2 v_uv;
out vec4 v_col;
void main() {
    vec4 p = modelview * vec4(position, 1.0);
    v_pos = p.xyz;
    v_nrm = normal_matrix * normal;
    v_uv = texcoord;
    v_col = color;
    gl_Position = projection * p;
}
"""

FRAG = """
in vec3 v_pos;
in vec3 v_nrm;
in vec2 v_uv;
in vec4 v_col;
out vec4 frag_color;

uniform vec4 base_color_factor;
uniform float metallic_factor;
uniform float roughness_factor;
uniform vec3 emissive_factor;
uniform int alpha_mode;      // 0 opaque, 1 mask, 2 blend
uniform float alpha_cutoff;
uniform sampler2D tex_base, tex_metallic_roughness, tex_normal, tex_occlusion, tex_emissive;
uniform vec3 light_dir[N_LIGHTS];        // toward each light, camera frame, unit
uniform float light_intensity[N_LIGHTS];
uniform float ambient;

const float PI = 3.141592653589793;
const float min_roughness = 0.04;

vec3 srgb_to_linear(vec3 s) {
    return mix(s / vec3(12.92), pow((s + vec3(0.055)) / vec3(1.055), vec3(2.4)), step(vec3(0.04045), s));
}

vec3 surface_normal() {
    vec3 ng = normalize(v_nrm);
#ifdef DOUBLE_SIDED
    if (!gl_FrontFacing) ng = -ng;
#endif
#ifdef HAS_NORMAL
    vec3 pos_dx = dFdx(v_pos);
    vec3 pos_dy = dFdy(v_pos);
    vec3 tex_dx = dFdx(vec3(v_uv, 0.0));
    vec3 tex_dy = dFdy(vec3(v_uv, 0.0));
    vec3 t = (tex_dy.t * pos_dx - tex_dx.t * pos_dy) / (tex_dx.s * tex_dy.t - tex_dy.s * tex_dx.t);
    t = normalize(t - ng * dot(ng, t));
    vec3 b = normalize(cross(ng, t));
    vec3 n = texture(tex_normal, v_uv).rgb;
    vec3 mapped = normalize(mat3(t, b, ng) * (2.0 * n - 1.0));
    return all(equal(mapped, mapped)) ? mapped : ng;  // NaN (no uv gradient): the plain normal
#else
    return ng;
#endif
}

void main() {
    vec4 base = base_color_factor * v_col;
#ifdef HAS_BASE
    vec4 texel = texture(tex_base, v_uv);
    base *= vec4(srgb_to_linear(texel.rgb), texel.a);
#endif
    float alpha = base.a;
#ifdef ALPHA_MASK
    if (alpha < alpha_cutoff) discard;
#endif
    if (alpha_mode != 2) alpha = 1.0;

    float roughness = roughness_factor;
    float metallic = metallic_factor;
#ifdef HAS_METALLIC_ROUGHNESS
    vec4 mr = texture(tex_metallic_roughness, v_uv);
    roughness *= mr.g;
    metallic *= mr.b;
#endif
    roughness = clamp(roughness, min_roughness, 1.0);
    metallic = clamp(metallic, 0.0, 1.0);
    vec3 c_diff = base.rgb * ((1.0 - min_roughness) * (1.0 - metallic));
    vec3 f0 = mix(vec3(min_roughness), base.rgb, metallic);

    // pyrender's BRDF (mesh.frag compute_brdf), light-independent terms hoisted
    vec3 n = surface_normal();
    vec3 v = normalize(-v_pos);
    float nv = clamp(abs(dot(n, v)), 0.001, 1.0);
    float r = roughness + 1.0;
    float k = r * r / 8.0;
    float g_v = nv / (nv * (1.0 - k) + k);
    float a = roughness * roughness;
    float a2 = a * a;
    vec3 diffuse_pi = c_diff / PI;
    vec3 color = vec3(0.0);
    for (int i = 0; i < N_LIGHTS; i++) {
        vec3 l = light_dir[i];
        vec3 h = normalize(l + v);
        float nl = clamp(dot(n, l), 0.001, 1.0);
        float nh = clamp(dot(n, h), 0.0, 1.0);
        float x = 1.0 - clamp(dot(v, h), 0.0, 1.0);
        float x2 = x * x;
        vec3 F = f0 + (1.0 - f0) * (x2 * x2 * x);
        float G = g_v * (nl / (nl * (1.0 - k) + k));
        float d = nh * nh * (a2 - 1.0) + 1.0;
        float D = a2 / (PI * d * d);
        color += (nl * light_intensity[i]) * ((1.0 - F) * diffuse_pi + F * (G * D / (4.0 * nl * nv + 0.001)));
    }
#ifdef HAS_OCCLUSION
    color += base.rgb * (ambient * texture(tex_occlusion, v_uv).r);
#else
    color += base.rgb * ambient;
#endif
    vec3 emissive = emissive_factor;
#ifdef HAS_EMISSIVE
    emissive *= srgb_to_linear(texture(tex_emissive, v_uv).rgb);
#endif
    frag_color = clamp(vec4(pow(color + emissive, vec3(1.0 / 2.2)), alpha), 0.0, 1.0);
}
"""


def fragment_source(n_lights: int, features) -> str:
    """The fragment shader for ``n_lights`` directional lights and a feature set: names from
    ``HAS_BASE``, ``HAS_METALLIC_ROUGHNESS``, ``HAS_NORMAL``, ``HAS_OCCLUSION``,
    ``HAS_EMISSIVE``, ``ALPHA_MASK``, ``DOUBLE_SIDED``."""
    defines = "".join(f"#define {f}\n" for f in sorted(features))
    return f"#version 330 core\n#define N_LIGHTS {int(n_lights)}\n" + defines + FRAG


# The resolve-and-composite pass of the atlas: one full-rectangle quad over the used corner
# (vertices from gl_VertexID, no buffers). Premultiplied MSAA colour c (mean of the samples)
# over the background b: c.rgb + b * (1 - c.a); alpha = coverage.
COMPOSITE_VERT = """
#version 330 core
void main() {
    gl_Position = vec4(float(gl_VertexID & 1) * 2.0 - 1.0, float(gl_VertexID >> 1) * 2.0 - 1.0, 0.0, 1.0);
}
"""

COMPOSITE_FRAG = """
uniform sampler2DMS colour;
uniform sampler2D background;
out vec4 frag_color;
void main() {
    ivec2 p = ivec2(gl_FragCoord.xy);
    vec4 c = vec4(0.0);
    for (int s = 0; s < N_SAMPLES; s++) c += texelFetch(colour, p, s);
    c /= float(N_SAMPLES);
    frag_color = vec4(c.rgb + texelFetch(background, p, 0).rgb * (1.0 - c.a), c.a);
}
"""
