//! Connected components of a 3D mask, by a two-pass union-find scan: the first pass joins
//! each voxel with its already-visited neighbours, the second numbers the components in
//! scan order and counts their voxels.

/// Which neighbours touch: 6 share a face, 18 a face or an edge, 26 any corner (nnU-Net's
/// and MONAI's largest-component filters use 26, the full neighbourhood).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Connectivity {
    Faces,
    Edges,
    Corners,
}

impl Connectivity {
    /// The neighbour offsets visited before a voxel in a scan with the first axis fastest:
    /// half of the neighbourhood, so each touching pair is seen once.
    fn earlier_offsets(self) -> Vec<[isize; 3]> {
        let mut offsets = Vec::new();
        for dz in -1..=1isize {
            for dy in -1..=1isize {
                for dx in -1..=1isize {
                    let earlier = (dz, dy, dx) < (0, 0, 0);
                    let touching = dx.abs() + dy.abs() + dz.abs();
                    let allowed = match self {
                        Connectivity::Faces => touching == 1,
                        Connectivity::Edges => touching <= 2,
                        Connectivity::Corners => true,
                    };
                    if earlier && allowed {
                        offsets.push([dx, dy, dz]);
                    }
                }
            }
        }
        offsets
    }
}

/// The components of a mask: `labels[i]` is 0 outside it, else the 1-based component of
/// voxel `i`, numbered in scan order; `sizes[l - 1]` is component `l`'s voxel count.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Components {
    pub labels: Vec<u32>,
    pub sizes: Vec<usize>,
}

/// The root of `i`'s tree, halving the path on the way.
fn find(parent: &mut [u32], mut i: u32) -> u32 {
    while parent[i as usize] != i {
        let grand = parent[parent[i as usize] as usize];
        parent[i as usize] = grand;
        i = grand;
    }
    i
}

/// Labels the components of `mask`, a grid of `dims` voxels with the first axis fastest.
pub fn label_components(mask: &[bool], dims: [usize; 3], connectivity: Connectivity) -> Components {
    assert_eq!(
        mask.len(),
        dims.iter().product::<usize>(),
        "mask of {dims:?} voxels"
    );
    let offsets = connectivity.earlier_offsets();
    let [nx, ny, nz] = dims.map(|d| d as isize);
    // Provisional labels: index into `parent`; 0 is reserved for "outside".
    let mut provisional = vec![0u32; mask.len()];
    let mut parent: Vec<u32> = vec![0];
    let mut i = 0usize;
    for z in 0..nz {
        for y in 0..ny {
            for x in 0..nx {
                if mask[i] {
                    let mut own = 0u32;
                    for &[dx, dy, dz] in &offsets {
                        let (xn, yn, zn) = (x + dx, y + dy, z + dz);
                        if xn < 0 || yn < 0 || zn < 0 || xn >= nx || yn >= ny {
                            continue;
                        }
                        let n = provisional[((zn * ny + yn) * nx + xn) as usize];
                        if n == 0 {
                            continue;
                        }
                        let root = find(&mut parent, n);
                        if own == 0 {
                            own = root;
                        } else if root != own {
                            let (keep, join) = (own.min(root), own.max(root));
                            parent[join as usize] = keep;
                            own = keep;
                        }
                    }
                    if own == 0 {
                        own = parent.len() as u32;
                        parent.push(own);
                    }
                    provisional[i] = own;
                }
                i += 1;
            }
        }
    }
    let mut final_of_root = vec![0u32; parent.len()];
    let mut sizes = Vec::new();
    for label in provisional.iter_mut().filter(|l| **l != 0) {
        let root = find(&mut parent, *label) as usize;
        if final_of_root[root] == 0 {
            sizes.push(0);
            final_of_root[root] = sizes.len() as u32;
        }
        *label = final_of_root[root];
        sizes[*label as usize - 1] += 1;
    }
    Components {
        labels: provisional,
        sizes,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A mask from `(x, y, z)` voxels set on a grid of `dims`.
    fn mask_of(dims: [usize; 3], set: &[[usize; 3]]) -> Vec<bool> {
        let mut mask = vec![false; dims.iter().product()];
        for &[x, y, z] in set {
            mask[(z * dims[1] + y) * dims[0] + x] = true;
        }
        mask
    }

    #[test]
    fn each_connectivity_joins_exactly_its_neighbours() {
        let dims = [4, 4, 4];
        // A centre voxel with one face, one edge and one corner neighbour.
        let mask = mask_of(dims, &[[1, 1, 1], [2, 1, 1], [0, 0, 1], [0, 2, 2]]);
        let faces = label_components(&mask, dims, Connectivity::Faces);
        let edges = label_components(&mask, dims, Connectivity::Edges);
        let corners = label_components(&mask, dims, Connectivity::Corners);
        let sorted = |c: &Components| {
            let mut s = c.sizes.clone();
            s.sort_unstable();
            s
        };
        assert_eq!(sorted(&faces), vec![1, 1, 2]);
        assert_eq!(sorted(&edges), vec![1, 3]);
        assert_eq!(sorted(&corners), vec![4]);
        assert_eq!(faces.labels.iter().filter(|&&l| l != 0).count(), 4);
    }

    #[test]
    fn a_u_shape_met_late_in_the_scan_is_one_component() {
        // Two arms that only meet at the last row seen: the scan must merge their labels.
        let dims = [5, 4, 1];
        let mut set = Vec::new();
        for y in 0..4 {
            set.extend([[0, y, 0], [4, y, 0]]);
        }
        set.extend((1..4).map(|x| [x, 3, 0]));
        let c = label_components(&mask_of(dims, &set), dims, Connectivity::Faces);
        assert_eq!(c.sizes, vec![11]);
        assert!(c
            .labels
            .iter()
            .zip(mask_of(dims, &set))
            .all(|(&l, m)| (l == 1) == m));
    }

    #[test]
    fn components_do_not_wrap_around_the_grid_edges() {
        // (3, 0, 0) and (0, 1, 0) are neighbours in memory, not on the grid.
        let dims = [4, 3, 2];
        let mask = mask_of(dims, &[[3, 0, 0], [0, 1, 0], [0, 2, 1], [3, 2, 0]]);
        let c = label_components(&mask, dims, Connectivity::Corners);
        let mut sizes = c.sizes.clone();
        sizes.sort_unstable();
        assert_eq!(sizes, vec![1, 1, 2], "{:?}", c.labels);
    }

    #[test]
    fn an_empty_mask_has_no_components() {
        let c = label_components(&[false; 8], [2, 2, 2], Connectivity::Corners);
        assert!(c.sizes.is_empty());
        assert!(c.labels.iter().all(|&l| l == 0));
    }
}
